-- Three races in the inbound transaction (a review of it, reading the SQL against PostgreSQL's
-- locking rules):
--   1. A message named by a LID alone took no phone lock (020's), though the LID's contact may have
--      a phone: stored at the same moment as a message of that phone further apart than the
--      timeout, it could revive a session the other had just opened and that was due before it
--      (one session of two). It now takes the lock of its contact's phone, in the mode the caller
--      gives (`phone_lock`: exclusive for an old message, shared for live traffic).
--   2. The active session was read without a lock, so a sweeper (or a person) ending it at that
--      moment was not waited for: the message's touch then found no active session to extend and
--      opened a second one beside the ended one, overlapping it. place_inbound_message() now locks
--      the active session it reads; once the other has committed the session is ended, and the
--      message is counted in it as a late one (015's rule).
--   3. The LID-only contact update checked deleted_at only in its subquery, which is not evaluated
--      again after waiting for the row: a message could be counted on a contact deleted meanwhile.
-- place_inbound_message() of 015 and inbound_store_messages() of 023 restated whole, with those
-- changes (marked 024); the phone lock of 020 is a function of its own, as both kinds take it.

-- The transaction-scoped lock on a phone of a project: shared for live traffic ('s'), else
-- exclusive (an old message: it may open a session that is due before another message of it).
CREATE FUNCTION inbound_lock_phone(p_project uuid, p_phone text, p_mode text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF p_mode = 's' THEN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_project::text || '/tel:' || p_phone, 0));
  ELSE
    PERFORM pg_advisory_xact_lock(hashtextextended(p_project::text || '/tel:' || p_phone, 0));
  END IF;
END
$fn$;
CREATE OR REPLACE FUNCTION place_inbound_message(p_new_id uuid, p_project uuid, p_contact uuid, p_channel uuid, p_at timestamptz,
                                      p_from_me boolean, p_timeout int)
RETURNS TABLE (id uuid, inserted boolean, started_at timestamptz, timeout_minutes int, ended boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_active uuid;
  v_active_start timestamptz;
  v_active_timeout int;
  v_held uuid;
  v_held_start timestamptz;
  v_held_end timestamptz;
  v_held_reason text;
  v_held_timeout int;
  v_held_fresh boolean;
  v_next timestamptz;
  v_start timestamptz;
  v_end timestamptz;
  v_grown double precision;
BEGIN
  -- Locked (024): a sweeper or a person ending it now is waited for, and then it is not active.
  SELECT s.id, s.started_at, s.timeout_minutes INTO v_active, v_active_start, v_active_timeout
  FROM sessions s WHERE s.contact_id = p_contact AND s.channel_id = p_channel AND s.status = 'active'
  FOR UPDATE;

  -- The usual case, and the cheap one: at or after the active session's start.
  IF v_active IS NOT NULL AND p_at >= v_active_start THEN
    RETURN QUERY SELECT t.id, t.inserted, t.started_at, t.timeout_minutes, false
    FROM touch_active_session(p_new_id, p_project, p_contact, p_channel, p_at, p_from_me, p_timeout) t;
    RETURN;
  END IF;

  -- An ended session whose time holds it: the one it falls inside, else the nearest one it comes
  -- shortly (less than the timeout) before.
  SELECT s.id, s.started_at, s.ended_at, s.end_reason, s.timeout_minutes, s.created_at = now()
  INTO v_held, v_held_start, v_held_end, v_held_reason, v_held_timeout, v_held_fresh
  FROM sessions s
  WHERE s.contact_id = p_contact AND s.channel_id = p_channel AND s.status = 'ended'
    AND s.started_at - make_interval(mins => s.timeout_minutes) <= p_at AND p_at < s.ended_at
  ORDER BY (s.started_at <= p_at) DESC, CASE WHEN s.started_at <= p_at THEN s.started_at END DESC NULLS LAST, s.started_at
  LIMIT 1
  FOR UPDATE;

  IF v_held IS NULL AND v_active IS NOT NULL AND p_at >= v_active_start - make_interval(mins => v_active_timeout) THEN
    -- Shortly before the active session's start, and no ended session holds it: the active one
    -- begins with it.
    RETURN QUERY SELECT t.id, t.inserted, t.started_at, t.timeout_minutes, false
    FROM touch_active_session(p_new_id, p_project, p_contact, p_channel, p_at, p_from_me, p_timeout) t;
    RETURN;
  END IF;

  IF v_held IS NOT NULL THEN
    -- A session ended for inactivity would have lasted until this message plus the timeout: its end
    -- moves on, though never past the next session's start, nor past now. One closed by hand keeps
    -- its end.
    v_start := LEAST(v_held_start, p_at);
    v_end := v_held_end;
    IF v_held_reason = 'inactivity_timeout' THEN
      SELECT min(n.started_at) INTO v_next FROM sessions n
      WHERE n.contact_id = p_contact AND n.channel_id = p_channel AND n.started_at > v_held_start AND n.id <> v_held;
      v_end := GREATEST(v_held_end, LEAST(p_at + make_interval(mins => v_held_timeout), COALESCE(v_next, 'infinity'::timestamptz), now()));
    END IF;
    UPDATE sessions s SET
      started_at = v_start,
      ended_at = v_end,
      last_activity_at = GREATEST(s.last_activity_at, p_at),
      message_count = s.message_count + 1,
      messages_from_contact = s.messages_from_contact + CASE WHEN p_from_me THEN 0 ELSE 1 END,
      messages_from_agent = s.messages_from_agent + CASE WHEN p_from_me THEN 1 ELSE 0 END,
      first_contact_message_at = CASE WHEN p_from_me THEN s.first_contact_message_at ELSE LEAST(s.first_contact_message_at, p_at) END,
      first_response_at = CASE WHEN s.first_response_at IS NULL AND p_from_me AND s.first_contact_message_at <= p_at
                          THEN p_at ELSE s.first_response_at END,
      first_response_seconds = CASE WHEN s.first_response_at IS NULL AND p_from_me AND s.first_contact_message_at <= p_at
                               THEN floor(extract(epoch FROM p_at - s.first_contact_message_at))::int ELSE s.first_response_seconds END,
      updated_at = now()
    WHERE s.id = v_held;
    -- Its session.ended went out with its old span, and the contact's session time was counted from
    -- that: it grows by what the span grew. (A session opened as ended in this transaction has not
    -- sent its session.ended yet; that will carry the whole span.)
    v_grown := extract(epoch FROM (v_held_start - v_start) + (v_end - v_held_end));
    IF NOT v_held_fresh AND v_grown >= 1 THEN
      UPDATE contacts SET total_session_seconds = total_session_seconds + floor(v_grown)::bigint WHERE contacts.id = p_contact;
    END IF;
    RETURN QUERY SELECT v_held, false, v_start, v_held_timeout, true;
    RETURN;
  END IF;

  -- A later session (the active one, or an ended one) means this conversation is over: a session
  -- of its own, written as ended, that never reaches into the later one.
  SELECT min(n.started_at) INTO v_next FROM sessions n
  WHERE n.contact_id = p_contact AND n.channel_id = p_channel AND n.started_at > p_at;
  IF v_active IS NOT NULL OR v_next IS NOT NULL THEN
    INSERT INTO sessions (id, project_id, contact_id, channel_id, status, started_at, last_activity_at, timeout_minutes,
      due_at, ended_at, end_reason, message_count, messages_from_contact, messages_from_agent, first_contact_message_at)
    VALUES (p_new_id, p_project, p_contact, p_channel, 'ended', p_at, p_at, p_timeout, NULL,
      GREATEST(p_at, LEAST(p_at + make_interval(mins => p_timeout), COALESCE(v_next, 'infinity'::timestamptz), now())), 'inactivity_timeout', 1,
      CASE WHEN p_from_me THEN 0 ELSE 1 END, CASE WHEN p_from_me THEN 1 ELSE 0 END, CASE WHEN p_from_me THEN NULL ELSE p_at END);
    UPDATE contacts SET total_sessions = total_sessions + 1 WHERE contacts.id = p_contact;
    RETURN QUERY SELECT p_new_id, true, p_at, p_timeout, true;
    RETURN;
  END IF;

  RETURN QUERY SELECT t.id, t.inserted, t.started_at, t.timeout_minutes, false
  FROM touch_active_session(p_new_id, p_project, p_contact, p_channel, p_at, p_from_me, p_timeout) t;
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
      PERFORM 1 FROM sessions s WHERE s.contact_id = v_known AND s.channel_id = v_channel AND s.status = 'active' AND s.due_at <= v_at;
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
        RETURNING id, name, name_source, ad_attribution IS NOT NULL, wa_lid
        INTO contact_id, v_name, v_name_source, v_has_ad, v_wa_lid;
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
        RETURNING t.id, (t.xmax = 0), t.name, t.name_source, t.ad_attribution IS NOT NULL, t.wa_lid,
          CASE WHEN t.xmax = 0 THEN to_jsonb(t) END
        INTO contact_id, contact_inserted, v_name, v_name_source, v_has_ad, v_wa_lid, contact;
      END IF;
    ELSE
      UPDATE contacts SET first_interaction_at = LEAST(first_interaction_at, v_at),
        last_interaction_at = GREATEST(last_interaction_at, v_at), total_messages = total_messages + 1
      -- deleted_at checked here too (024): the subquery is not evaluated again after waiting for
      -- the row, so a contact deleted meanwhile would otherwise be counted on.
      WHERE deleted_at IS NULL AND id = (SELECT x.id FROM contacts x WHERE x.project_id = p_project AND x.wa_lid = v_lid AND x.deleted_at IS NULL
                  ORDER BY x.phone IS NULL, x.created_at LIMIT 1)
      RETURNING id, name, name_source, ad_attribution IS NOT NULL, wa_lid
      INTO contact_id, v_name, v_name_source, v_has_ad, v_wa_lid;
      IF contact_id IS NULL THEN
        INSERT INTO contacts AS t (id, project_id, name, name_source, wa_lid, source, ad_attribution,
          first_interaction_at, last_interaction_at, total_messages)
        VALUES ((m->>'new_contact_id')::uuid, p_project, v_push, CASE WHEN v_push IS NULL THEN NULL ELSE 'push' END,
          v_lid, m->>'source', v_ad, v_at, v_at, 1)
        ON CONFLICT (project_id, wa_lid) WHERE deleted_at IS NULL AND phone IS NULL AND wa_lid IS NOT NULL DO UPDATE SET
          first_interaction_at = LEAST(t.first_interaction_at, v_at), last_interaction_at = GREATEST(t.last_interaction_at, v_at),
          total_messages = t.total_messages + 1
        RETURNING t.id, (t.xmax = 0), t.name, t.name_source, t.ad_attribution IS NOT NULL, t.wa_lid,
          CASE WHEN t.xmax = 0 THEN to_jsonb(t) END
        INTO contact_id, contact_inserted, v_name, v_name_source, v_has_ad, v_wa_lid, contact;
      END IF;
    END IF;

    -- 4. what the message teaches about a known contact (rare, so a second write only then)
    IF NOT contact_inserted THEN
      IF v_push IS NOT NULL AND v_name_source IS DISTINCT FROM 'user' AND v_name IS DISTINCT FROM v_push THEN
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
    FROM place_inbound_message((m->>'new_session_id')::uuid, p_project, contact_id, v_channel, v_at, v_from_me,
                               (m->>'timeout_minutes')::int) t;

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
