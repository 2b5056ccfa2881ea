-- Channels saved before shown settings were trimmed on input may hold a value with spaces pasted
-- around it: a Cloud phone_number_id that no webhook's metadata then matches (every message of the
-- channel skipped), a WAHA session, or a base URL whose space also kept its trailing slash. Trim
-- them as the API now does on input (ASCII whitespace; URLs also lose trailing slashes), and the
-- lookup name beside them. Secrets are stored encrypted and kept exactly as given. updated_at is
-- left alone: nobody changed the channel.
UPDATE channels c
SET config = COALESCE((
      SELECT jsonb_object_agg(e.key,
               CASE
                 WHEN jsonb_typeof(e.value) <> 'string' THEN e.value
                 WHEN e.key IN ('base_url', 'api_base_url')
                   THEN to_jsonb(regexp_replace(btrim(e.value #>> '{}', E' \t\r\n\f\x0B'), '/+$', ''))
                 ELSE to_jsonb(btrim(e.value #>> '{}', E' \t\r\n\f\x0B'))
               END)
      FROM jsonb_each(c.config) AS e
    ), '{}'::jsonb),
    external_ref = btrim(c.external_ref, E' \t\r\n\f\x0B')
WHERE c.external_ref <> btrim(c.external_ref, E' \t\r\n\f\x0B')
   OR EXISTS (SELECT 1 FROM jsonb_each(c.config) AS e
              WHERE jsonb_typeof(e.value) = 'string'
                AND (e.value #>> '{}') <> btrim(e.value #>> '{}', E' \t\r\n\f\x0B'));
