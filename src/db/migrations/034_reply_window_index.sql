-- A session's reply_window_until (sessions-read.sql.ts) is 24 hours after the contact's latest
-- message through the channel: the newest row of this index for (contact, channel). Our replies
-- and WhatsApp's system notices (a customer changed numbers) do not open Meta's window, so they
-- are not in it.
CREATE INDEX IF NOT EXISTS messages_contact_wrote ON messages (contact_id, channel_id, "timestamp" DESC)
  WHERE NOT from_me AND NOT (metadata ? 'system');
