-- A person first known by their LID alone (WhatsApp hides the phone) has a contact of that LID
-- without a phone. When a later message names the LID and the phone, and the phone already has a
-- contact of its own (created through the API, or by traffic that named the phone), the two are
-- one person: the LID-only contact is merged into the phone's. Before, the phone's contact took
-- the LID and later messages, and the LID-only one kept the earlier conversation for ever.
--
-- Step 2 of inbound_store_messages() finds that case (the phone locked, the LID locked by the
-- caller) and reports it as `lid_merge` with the LID-only contact's id, writing nothing for it and
-- returning no row for the messages after it; the caller merges (contact-merge.sql.ts) and passes
-- those messages again, as it does for `overdue`.
-- inbound_store_messages() of 020 restated whole, with that one branch added.
ALTER TABLE contacts ADD COLUMN merged_into uuid REFERENCES contacts (id);

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
      IF m->>'phone_lock' = 's' THEN
        PERFORM pg_advisory_xact_lock_shared(hashtextextended(p_project::text || '/tel:' || v_phone, 0));
      ELSE
        PERFORM pg_advisory_xact_lock(hashtextextended(p_project::text || '/tel:' || v_phone, 0));
      END IF;
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
