-- Inbound pipeline additions to the conversation schema (005).

-- The bare provider message id. WAHA names one message `false_<chat>_<ID>` in one event and `<ID>`
-- in another (GOWS, acks, reactions, edits); every writer must dedupe and every reference must
-- match on the same key, so the database derives it instead of trusting each writer to. Mirrors
-- wahaMessageKey() in src/inbound/waha/waha-jid.ts; ids of other providers (wamid.…) pass unchanged.
ALTER TABLE messages ADD COLUMN external_key text
  GENERATED ALWAYS AS (regexp_replace(external_id, '^(?:true|false)_[^_]+_([^_]+)(?:_.+)?$', '\1')) STORED;
CREATE UNIQUE INDEX messages_external_key ON messages (channel_id, external_key);
-- Equal external ids have equal keys, so the key's index enforces what 005's index on the raw id
-- did; keeping both would cost every stored message a second unique-index insertion for nothing.
DROP INDEX messages_external;

-- Every message touches its contact (last interaction, counters) on columns no index covers; room
-- left in each page lets those updates stay on the page (HOT) instead of rewriting every index.
ALTER TABLE contacts SET (fillfactor = 85);

-- A LID can belong to a contact that already has its phone (joined later): lookups by LID must
-- find those too, not only the LID-only rows covered by contacts_lid.
CREATE INDEX contacts_wa_lid ON contacts (project_id, wa_lid) WHERE deleted_at IS NULL AND wa_lid IS NOT NULL;

-- Spilled webhooks are claimed with a lease while the drainer republishes them, so several
-- drainers (one per worker process) never send the same row at the same time, and a drainer that
-- dies mid-send lets its rows come back.
ALTER TABLE inbound_events ADD COLUMN locked_until timestamptz;

-- Counts one message on the active session of a conversation (contact + channel), or opens the
-- session with it. The partial unique index sessions_one_active is the arbiter, so concurrent first
-- messages of a conversation meet on one row instead of racing to create two. Each message counts
-- as the contact's or as the agent's; the first agent message after the contact's first one sets
-- the first-response metrics. A session opened here counts towards the contact's total_sessions.
-- Used by inbound_store_messages() below and by replies going out (src/db/sessions.sql.ts).
CREATE FUNCTION touch_active_session(p_new_id uuid, p_project uuid, p_contact uuid, p_channel uuid, p_at timestamptz,
                                     p_from_me boolean, p_timeout int)
RETURNS TABLE (id uuid, inserted boolean, started_at timestamptz, timeout_minutes int)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
  INSERT INTO sessions AS s (id, project_id, contact_id, channel_id, status, started_at, last_activity_at, timeout_minutes,
    due_at, message_count, messages_from_contact, messages_from_agent, first_contact_message_at)
  VALUES (p_new_id, p_project, p_contact, p_channel, 'active', p_at, p_at, p_timeout, p_at + make_interval(mins => p_timeout), 1,
    CASE WHEN p_from_me THEN 0 ELSE 1 END, CASE WHEN p_from_me THEN 1 ELSE 0 END, CASE WHEN p_from_me THEN NULL ELSE p_at END)
  ON CONFLICT (contact_id, channel_id) WHERE status = 'active' DO UPDATE SET
    last_activity_at = GREATEST(s.last_activity_at, EXCLUDED.last_activity_at),
    due_at = GREATEST(s.last_activity_at, EXCLUDED.last_activity_at) + make_interval(mins => s.timeout_minutes),
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

-- Stores a batch of new messages, in the order given, inside the caller's (tenant) transaction.
-- It is the write path of src/services/inbound.service.ts, moved next to the data because it is
-- the hot path: one round trip per batch instead of three or four per message, and plans that
-- PL/pgSQL prepares once per connection instead of at every statement.
--
-- Per message (each statement sees what the previous ones did, even from other transactions):
--   1. dedupe: a message the channel already has changes nothing, not even counters;
--   2. a conversation whose active session fell due before the message is reported ('overdue')
--      untouched: the caller ends that session (as the sweeper would) and passes the message again;
--   3. the contact, upserted on the partial unique indexes of 005 (never looked up, then inserted):
--      by phone — giving the phone to a contact known until now only by its LID, when there is
--      one and the phone has no contact of its own — or by LID alone;
--   4. what the message teaches about an existing contact: a push name (never over a name a person
--      set), first-touch ad attribution, the LID;
--   5. the active session (touch_active_session above);
--   6. the message. Losing that insert to a concurrent copy of the same message raises VTDUP: the
--      caller rolls back and retries, and the retry stops at step 1.
-- Input: a JSON array of objects built by storeInboundMessages() (src/db/inbound-messages.sql.ts).
CREATE FUNCTION inbound_store_messages(p_project uuid, p_batch jsonb)
RETURNS TABLE (n int, outcome text, contact jsonb, contact_id uuid, contact_inserted boolean, contact_changes text[],
               session_id uuid, session_inserted boolean, session_started_at timestamptz, session_timeout int)
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
    session_id := NULL; session_inserted := NULL; session_started_at := NULL; session_timeout := NULL;

    -- 1. dedupe
    PERFORM 1 FROM messages WHERE channel_id = v_channel AND external_key = m->>'external_key';
    IF FOUND THEN
      outcome := 'duplicate';
      RETURN NEXT;
      CONTINUE;
    END IF;

    -- 2. a conversation whose active session fell due before this message (the sweeper has not
    --    ended it yet: a backlog after an outage) must not be revived: report it, write nothing;
    --    the caller ends that session and passes the message again.
    IF v_phone IS NOT NULL THEN
      SELECT c.id INTO v_known FROM contacts c WHERE c.project_id = p_project AND c.phone = v_phone AND c.deleted_at IS NULL;
    ELSE
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
      WHERE id = (SELECT x.id FROM contacts x WHERE x.project_id = p_project AND x.wa_lid = v_lid AND x.deleted_at IS NULL
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

    -- 5. the active session
    SELECT t.id, t.inserted, t.started_at, t.timeout_minutes INTO session_id, session_inserted, session_started_at, session_timeout
    FROM touch_active_session((m->>'new_session_id')::uuid, p_project, contact_id, v_channel, v_at, v_from_me,
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
