-- Channels saved before shown settings were trimmed on input may hold a value with spaces pasted
-- around it: a Cloud phone_number_id that no webhook's metadata then matches (every message of the
-- channel skipped), a WAHA session, or a base URL whose space also kept its trailing slash. Trim
-- them as the API now does on input (the whitespace JavaScript's trim() removes, no-break spaces
-- included; URLs also lose trailing slashes), and the lookup name beside them. Secrets are stored
-- encrypted and kept exactly as given. updated_at is left alone: nobody changed the channel. A
-- config that is not an object (never written by the API) is left as it is.
WITH ws(chars) AS (
  SELECT E' \t\n\x0B\f\r' || chr(160) || chr(5760) || chr(8192) || chr(8193) || chr(8194) || chr(8195)
         || chr(8196) || chr(8197) || chr(8198) || chr(8199) || chr(8200) || chr(8201) || chr(8202)
         || chr(8232) || chr(8233) || chr(8239) || chr(8287) || chr(12288) || chr(65279)
)
UPDATE channels c
SET config = COALESCE((
      SELECT jsonb_object_agg(e.key,
               CASE
                 WHEN jsonb_typeof(e.value) <> 'string' THEN e.value
                 WHEN e.key IN ('base_url', 'api_base_url')
                   THEN to_jsonb(regexp_replace(btrim(e.value #>> '{}', ws.chars), '/+$', ''))
                 ELSE to_jsonb(btrim(e.value #>> '{}', ws.chars))
               END)
      FROM jsonb_each(c.config) AS e
    ), '{}'::jsonb),
    external_ref = btrim(c.external_ref, ws.chars)
FROM ws
WHERE jsonb_typeof(c.config) = 'object'
  AND (c.external_ref <> btrim(c.external_ref, ws.chars)
       OR EXISTS (SELECT 1 FROM jsonb_each(CASE WHEN jsonb_typeof(c.config) = 'object' THEN c.config ELSE '{}' END) AS e
                  WHERE jsonb_typeof(e.value) = 'string'
                    AND (e.value #>> '{}') <> btrim(e.value #>> '{}', ws.chars)));
