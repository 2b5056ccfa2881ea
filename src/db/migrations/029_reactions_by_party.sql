-- A message's reactions were keyed by the reactor's phone or LID. The chat is one-to-one (groups
-- are skipped), so a reaction is ours or the contact's; but the contact's key depended on how the
-- provider named them that time: a reaction added under a LID and removed under the phone (or
-- after the LID's contact was merged into the phone's) was a second key, and the first stayed.
-- Reactions are now keyed `me` or `contact`. The contact's reaction kept here is the newest of
-- their keys (by reactions_at; a removal newer than a reaction leaves none); rows written before
-- reactions_at existed (migration 013) keep the key that sorts last.
WITH party AS (
  SELECT m.id,
    (SELECT k FROM (SELECT jsonb_object_keys(m.reactions) UNION SELECT jsonb_object_keys(m.reactions_at)) AS keys(k)
     WHERE k NOT IN ('me', 'contact')
     ORDER BY (m.reactions_at->>k)::timestamptz DESC NULLS LAST, k DESC LIMIT 1) AS newest
  FROM messages m
  WHERE EXISTS (SELECT 1 FROM jsonb_object_keys(m.reactions) k WHERE k NOT IN ('me', 'contact'))
     OR EXISTS (SELECT 1 FROM jsonb_object_keys(m.reactions_at) k WHERE k NOT IN ('me', 'contact'))
)
UPDATE messages m SET
  reactions = (CASE WHEN m.reactions ? 'me' THEN jsonb_build_object('me', m.reactions->'me') ELSE '{}'::jsonb END)
    || (CASE WHEN m.reactions ? p.newest THEN jsonb_build_object('contact', m.reactions->p.newest) ELSE '{}'::jsonb END),
  reactions_at = (CASE WHEN m.reactions_at ? 'me' THEN jsonb_build_object('me', m.reactions_at->'me') ELSE '{}'::jsonb END)
    || (CASE WHEN m.reactions_at ? p.newest THEN jsonb_build_object('contact', m.reactions_at->p.newest) ELSE '{}'::jsonb END)
FROM party p
WHERE m.id = p.id;
