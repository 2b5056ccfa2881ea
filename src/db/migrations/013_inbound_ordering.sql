-- Events that arrive out of order no longer undo later ones.
--
-- Reactions: each reactor's reaction carries the time it was made; a reaction (or its removal)
-- older than the one applied changes nothing. Meta does not order its deliveries, and a webhook
-- spilled and drained later, or retried, arrives after younger ones: a 👍 that came after its own
-- removal brought it back.
ALTER TABLE messages ADD COLUMN reactions_at jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Channel status: the provider's time of the last status event applied. A status event older than
-- it (a STARTING spilled during an outage and drained after WORKING) is stale. Kept apart from
-- status_changed_at, which a status refresh writes with our own clock: provider times are only
-- compared with provider times.
ALTER TABLE channels ADD COLUMN provider_status_at timestamptz;

-- Sessions: started_at is the earliest message's time, whichever of the session's messages commits
-- first (concurrent first messages, or a backlog processed out of order). Otherwise as in 006.
CREATE OR REPLACE FUNCTION touch_active_session(p_new_id uuid, p_project uuid, p_contact uuid, p_channel uuid, p_at timestamptz,
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
    started_at = LEAST(s.started_at, EXCLUDED.started_at),
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
