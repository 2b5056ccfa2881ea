-- Three findings of a review of the session lifecycle and the inbound transaction:
--   1. A session opened around a change of its channel's session_timeout_minutes kept the old
--      timeout for ever: the opener read it from its channel cache (which may not have heard the
--      change yet), the retiming of active sessions did not see a session not committed yet, and
--      every later message renewed the due time with the session's own stored timeout. A session
--      now opens with the channel's timeout as committed (the caller's when the channel has none:
--      the deployment default), each message renews it with that timeout, and a late message is
--      placed with it.
--   2. A message dated a few minutes ahead (accepted up to five) ended its conversation's active
--      session before that session was due: the overdue check now compares the due time with the
--      message's time or the clock, whichever is earlier (endOverdueSession does the same).
--   3. A message delivered late set the contact's name back to the push name it carried, older
--      than the one a newer message had set: a contact is now renamed by its newest message only
--      (give or take a minute; one without a name takes any).
-- touch_active_session() of 013 and inbound_store_messages() of 024 restated whole, with those
-- changes (marked 035).

CREATE OR REPLACE FUNCTION touch_active_session(p_new_id uuid, p_project uuid, p_contact uuid, p_channel uuid, p_at timestamptz,
                                     p_from_me boolean, p_timeout int)
RETURNS TABLE (id uuid, inserted boolean, started_at timestamptz, timeout_minutes int)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  -- (035) The channel's own timeout as committed now, over the caller's (read from a cache that may
  -- not have heard a change yet); the caller's is the deployment default for a channel without one.
  v_timeout int := COALESCE((SELECT c.session_timeout_minutes FROM channels c WHERE c.id = p_channel), p_timeout);
BEGIN
  INSERT INTO sessions AS s (id, project_id, contact_id, channel_id, status, started_at, last_activity_at, timeout_minutes,
    due_at, message_count, messages_from_contact, messages_from_agent, first_contact_message_at)
  VALUES (p_new_id, p_project, p_contact, p_channel, 'active', p_at, p_at, v_timeout, p_at + make_interval(mins => v_timeout), 1,
    CASE WHEN p_from_me THEN 0 ELSE 1 END, CASE WHEN p_from_me THEN 1 ELSE 0 END, CASE WHEN p_from_me THEN NULL ELSE p_at END)
  ON CONFLICT (contact_id, channel_id) WHERE status = 'active' DO UPDATE SET
    started_at = LEAST(s.started_at, EXCLUDED.started_at),
    last_activity_at = GREATEST(s.last_activity_at, EXCLUDED.last_activity_at),
    -- (035) Renewed with the timeout in force, which a session opened around a change of it (or a
    -- restart with another SESSION_TIMEOUT_MINUTES) would otherwise keep for ever.
    timeout_minutes = v_timeout,
    due_at = GREATEST(s.last_activity_at, EXCLUDED.last_activity_at) + make_interval(mins => v_timeout),
    message_count = s.message_count + 1,
    messages_from_contact = s.messages_from_contact + EXCLUDED.messages_from_contact,
    messages_from_agent = s.messages_from_agent + EXCLUDED.messages_from_agent,
    first_contact_message_at = LEAST(s.first_contact_message_at, EXCLUDED.first_contact_message_at),
    first_response_at = CASE WHEN s.first_response_at IS NULL AND p_from_me AND s.first_contact_message_at <= p_at
                        THEN p_at ELSE s.first_response_at END,
    first_response_seconds = CASE WHEN s.first_response_at IS NULL AND p_from_me AND s.first_contact_message_at <= p_at
                             THEN floor(extract(epoch FROM p_at - s.first_contact_message_at))::int ELSE s.first_response_seconds END,
    updated_at = now()
  RETURNING s.id, (s.xmax = 0), s.started_at, s.timeout_minutes INTO id, inserted, started_at, timeout_minutes;
  IF inserted THEN
    UPDATE contacts SET total_sessions = total_sessions + 1 WHERE contacts.id = p_contact;
  END IF;
  RETURN NEXT;
END
$fn$;

CREATE OR REPLACE FUNCTION inbound_store_messages(p_project uuid, p_batch jsonb)
RETURNS TABLE (n int, outcome text, contact jsonb, contact_id uuid, contact_inserted boolean, contact_changes text[],
               session_id uuid, session_inserted boolean, session_started_at timestamptz, session_timeout int,
               session_ended boolean)
LANGUAGE plpgsql AS $fn$
-- The output columns contact_id and session_id share names with table columns; in SQL the column wins.
#variable_conflict use_column
DECLARE
  m jsonb;
  v_channel uuid;
  v_at timestamptz;
  v_from_me boolean;
  v_phone text;
  v_lid text;
  v_push text;
  v_ad jsonb;
  v_name text;
  v_name_source text;
  v_has_ad boolean;
  v_wa_lid text;
  v_known uuid;
  v_known_phone text;
  v_locked text[] := '{}';
  v_last timestamptz;
BEGIN
  FOR m, n IN SELECT e, i::int FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS a(e, i) LOOP
    v_channel := (m->>'channel_id')::uuid;
    v_at := (m->>'timestamp')::timestamptz;
    v_from_me := (m->>'from_me')::boolean;
    v_phone := m->>'phone';
    v_lid := m->>'lid';
    v_push := m->>'push_name';
    v_ad := NULLIF(m->'ad_attribution', 'null'::jsonb);
    outcome := NULL; contact := NULL; contact_id := NULL; v_known := NULL; contact_inserted := false; contact_changes := '{}';
    session_id := NULL; session_inserted := NULL; session_started_at := NULL; session_timeout := NULL; session_ended := NULL;

    -- 1. dedupe
    PERFORM 1 FROM messages WHERE channel_id = v_channel AND external_key = m->>'external_key';
    IF FOUND THEN
      outcome := 'duplicate';
      RETURN NEXT;
      CONTINUE;
    END IF;

    -- 2. a conversation whose active session fell due before this message (the sweeper has not
    --    ended it yet: a backlog after an outage) must not be revived: report it, write nothing;
    --    the caller ends that session and passes the message again. A transaction storing a
    --    message of the same phone is waited for first (migration 020).
    IF v_phone IS NOT NULL THEN
      PERFORM inbound_lock_phone(p_project, v_phone, m->>'phone_lock');
      v_locked := v_locked || v_phone;
      SELECT c.id INTO v_known FROM contacts c WHERE c.project_id = p_project AND c.phone = v_phone AND c.deleted_at IS NULL;
      -- The phone has no contact yet: the contact known so far by this LID alone is the one step 3
      -- gives the phone to, so its session is the one to check.
      IF v_known IS NULL AND v_lid IS NOT NULL THEN
        SELECT c.id INTO v_known FROM contacts c WHERE c.project_id = p_project AND c.wa_lid = v_lid AND c.phone IS NULL
          AND c.deleted_at IS NULL ORDER BY c.created_at LIMIT 1;
      ELSIF v_lid IS NOT NULL THEN
        -- The phone has a contact, and this LID one of its own without a phone (migration 023): the
        -- caller merges that one into the phone's contact, then passes this message and the rest
        -- of the batch again. The batch stops here, so the merge locks the phone's contact before
        -- any contact of a later phone, in the order every batch takes them.
        SELECT c.id INTO contact_id FROM contacts c WHERE c.project_id = p_project AND c.wa_lid = v_lid AND c.phone IS NULL
          AND c.deleted_at IS NULL ORDER BY c.created_at LIMIT 1;
        IF contact_id IS NOT NULL THEN
          outcome := 'lid_merge';
          RETURN NEXT;
          RETURN;
        END IF;
      END IF;
    ELSE
      -- (024) A LID whose contact has a phone: a message of that phone being stored by another
      -- processor is waited for, as two messages of the phone wait for each other (020); then the
      -- contact is looked up again, as that one left it.
      SELECT c.phone INTO v_known_phone FROM contacts c WHERE c.project_id = p_project AND c.wa_lid = v_lid AND c.deleted_at IS NULL
      ORDER BY c.phone IS NULL, c.created_at LIMIT 1;
      -- Not again when a message of that phone took it already: asking a shared lock we hold for
      -- the exclusive one would wait for every other holder, who may be waiting for us.
      IF v_known_phone IS NOT NULL AND NOT v_known_phone = ANY(v_locked) THEN
        PERFORM inbound_lock_phone(p_project, v_known_phone, m->>'phone_lock');
        v_locked := v_locked || v_known_phone;
      END IF;
      SELECT c.id INTO v_known FROM contacts c WHERE c.project_id = p_project AND c.wa_lid = v_lid AND c.deleted_at IS NULL
      ORDER BY c.phone IS NULL, c.created_at LIMIT 1;
    END IF;
    IF v_known IS NOT NULL THEN
      -- (035) Due by the message's time, but never before the clock says so: a message dated ahead
      -- (a provider's clock running up to five minutes fast) does not end a session before its time.
      -- The clock, not now(): a transaction that waited for a lock has a start long gone.
      PERFORM 1 FROM sessions s WHERE s.contact_id = v_known AND s.channel_id = v_channel AND s.status = 'active'
        AND s.due_at <= LEAST(v_at, clock_timestamp());
      IF FOUND THEN
        outcome := 'overdue';
        contact_id := v_known;
        RETURN NEXT;
        CONTINUE;
      END IF;
    END IF;

    -- 3. the contact, touched by this message and locked until commit
    IF v_phone IS NOT NULL THEN
      IF v_lid IS NOT NULL THEN
        UPDATE contacts SET phone = v_phone, wa_id = m->>'wa_id', first_interaction_at = LEAST(first_interaction_at, v_at),
          last_interaction_at = GREATEST(last_interaction_at, v_at), total_messages = total_messages + 1, updated_at = now()
        WHERE project_id = p_project AND wa_lid = v_lid AND phone IS NULL AND deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM contacts p WHERE p.project_id = p_project AND p.phone = v_phone AND p.deleted_at IS NULL)
        RETURNING id, name, name_source, ad_attribution IS NOT NULL, wa_lid, last_interaction_at
        INTO contact_id, v_name, v_name_source, v_has_ad, v_wa_lid, v_last;
        IF FOUND THEN contact_changes := ARRAY['phone', 'wa_id']; END IF;
      END IF;
      IF contact_id IS NULL THEN
        INSERT INTO contacts AS t (id, project_id, name, name_source, phone, wa_id, wa_lid, source, ad_attribution,
          first_interaction_at, last_interaction_at, total_messages)
        VALUES ((m->>'new_contact_id')::uuid, p_project, v_push, CASE WHEN v_push IS NULL THEN NULL ELSE 'push' END,
          v_phone, m->>'wa_id', v_lid, m->>'source', v_ad, v_at, v_at, 1)
        ON CONFLICT (project_id, phone) WHERE deleted_at IS NULL AND phone IS NOT NULL DO UPDATE SET
          first_interaction_at = LEAST(t.first_interaction_at, v_at), last_interaction_at = GREATEST(t.last_interaction_at, v_at),
          total_messages = t.total_messages + 1
        RETURNING t.id, (t.xmax = 0), t.name, t.name_source, t.ad_attribution IS NOT NULL, t.wa_lid, t.last_interaction_at,
          CASE WHEN t.xmax = 0 THEN to_jsonb(t) END
        INTO contact_id, contact_inserted, v_name, v_name_source, v_has_ad, v_wa_lid, v_last, contact;
      END IF;
    ELSE
      UPDATE contacts SET first_interaction_at = LEAST(first_interaction_at, v_at),
        last_interaction_at = GREATEST(last_interaction_at, v_at), total_messages = total_messages + 1
      -- deleted_at checked here too (024): the subquery is not evaluated again after waiting for
      -- the row, so a contact deleted meanwhile would otherwise be counted on.
      WHERE deleted_at IS NULL AND id = (SELECT x.id FROM contacts x WHERE x.project_id = p_project AND x.wa_lid = v_lid AND x.deleted_at IS NULL
                  ORDER BY x.phone IS NULL, x.created_at LIMIT 1)
      RETURNING id, name, name_source, ad_attribution IS NOT NULL, wa_lid, last_interaction_at
      INTO contact_id, v_name, v_name_source, v_has_ad, v_wa_lid, v_last;
      IF contact_id IS NULL THEN
        INSERT INTO contacts AS t (id, project_id, name, name_source, wa_lid, source, ad_attribution,
          first_interaction_at, last_interaction_at, total_messages)
        VALUES ((m->>'new_contact_id')::uuid, p_project, v_push, CASE WHEN v_push IS NULL THEN NULL ELSE 'push' END,
          v_lid, m->>'source', v_ad, v_at, v_at, 1)
        ON CONFLICT (project_id, wa_lid) WHERE deleted_at IS NULL AND phone IS NULL AND wa_lid IS NOT NULL DO UPDATE SET
          first_interaction_at = LEAST(t.first_interaction_at, v_at), last_interaction_at = GREATEST(t.last_interaction_at, v_at),
          total_messages = t.total_messages + 1
        RETURNING t.id, (t.xmax = 0), t.name, t.name_source, t.ad_attribution IS NOT NULL, t.wa_lid, t.last_interaction_at,
          CASE WHEN t.xmax = 0 THEN to_jsonb(t) END
        INTO contact_id, contact_inserted, v_name, v_name_source, v_has_ad, v_wa_lid, v_last, contact;
      END IF;
    END IF;

    -- 4. what the message teaches about a known contact (rare, so a second write only then)
    IF NOT contact_inserted THEN
      -- (035) Only the contact's newest message renames them: one delivered late (Meta retries for
      -- days, in no order) carries the name they had then (a contact with no name yet takes it).
      -- last_interaction_at is already this message's time when it is the newest; a minute's grace,
      -- as a reply of ours sets it by our clock, and a provider's times are whole seconds.
      IF v_push IS NOT NULL AND v_name_source IS DISTINCT FROM 'user' AND v_name IS DISTINCT FROM v_push
         AND (v_at >= v_last - interval '1 minute' OR v_name IS NULL) THEN
        contact_changes := contact_changes || 'name'::text;
      END IF;
      IF v_ad IS NOT NULL AND NOT v_has_ad THEN
        contact_changes := contact_changes || 'ad_attribution'::text;
      END IF;
      IF cardinality(contact_changes) > 0 OR (v_lid IS NOT NULL AND v_wa_lid IS NULL) THEN
        UPDATE contacts AS t SET
          name = CASE WHEN 'name' = ANY(contact_changes) THEN v_push ELSE t.name END,
          name_source = CASE WHEN 'name' = ANY(contact_changes) THEN 'push' ELSE t.name_source END,
          ad_attribution = COALESCE(t.ad_attribution, v_ad),
          wa_lid = COALESCE(t.wa_lid, v_lid),
          updated_at = now()
        WHERE t.id = contact_id
        RETURNING CASE WHEN cardinality(contact_changes) > 0 THEN to_jsonb(t) END INTO contact;
      END IF;
    END IF;

    -- 5. the session the message belongs to by its time (place_inbound_message above)
    SELECT t.id, t.inserted, t.started_at, t.timeout_minutes, t.ended
    INTO session_id, session_inserted, session_started_at, session_timeout, session_ended
    -- (035) With the channel's timeout as committed, as touch_active_session() takes it: which
    -- session a late message belongs to, and the span of one written as ended, are counted with it.
    FROM place_inbound_message((m->>'new_session_id')::uuid, p_project, contact_id, v_channel, v_at, v_from_me,
                               COALESCE((SELECT c.session_timeout_minutes FROM channels c WHERE c.id = v_channel),
                                        (m->>'timeout_minutes')::int)) t;

    -- 6. the message
    INSERT INTO messages (id, project_id, channel_id, contact_id, session_id, direction, from_me, type, text, media, location,
      contact_card, external_id, status, sent_at, delivered_at, read_at, played_at, "timestamp", reply_to_external_id,
      ad_attribution, metadata)
    VALUES ((m->>'message_id')::uuid, p_project, v_channel, contact_id, session_id,
      CASE WHEN v_from_me THEN 'outbound' ELSE 'inbound' END, v_from_me, m->>'type', m->>'text',
      NULLIF(m->'media', 'null'), NULLIF(m->'location', 'null'), NULLIF(m->'contact_card', 'null'),
      m->>'external_id', m->>'status', (m->>'sent_at')::timestamptz, (m->>'delivered_at')::timestamptz,
      (m->>'read_at')::timestamptz, (m->>'played_at')::timestamptz, v_at, m->>'reply_to_external_id', v_ad, m->'metadata')
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'message % was stored by a concurrent transaction', m->>'external_id' USING ERRCODE = 'VTDUP';
    END IF;

    outcome := 'stored';
    RETURN NEXT;
  END LOOP;
END
$fn$;
