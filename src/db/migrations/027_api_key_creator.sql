-- Which API key created a key, when a key did (created_by names the user who was signed in; an
-- API key acts as itself, so a key made with one had no creator recorded at all). With both,
-- admins can still tell which keys a removed member minted, directly or through their keys.
-- Keys are only ever deleted with their project, so the reference lasts as long as the keys do.
-- Nullable, no default: adding it rewrites nothing, and keys made before it show null.
ALTER TABLE api_keys ADD COLUMN created_by_key_id uuid REFERENCES api_keys (id) ON DELETE SET NULL;
