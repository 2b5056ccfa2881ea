-- Replies of one conversation go out in the order they were queued: a sender takes a queued reply
-- only when no earlier reply to the same person through the same channel is still queued (waiting,
-- being sent, or waiting for a retry). The claim asks that of this index, which holds the queued
-- replies only (a handful at any time).
CREATE INDEX messages_queued_conversation ON messages (contact_id, channel_id, created_at, id) WHERE status = 'queued';
