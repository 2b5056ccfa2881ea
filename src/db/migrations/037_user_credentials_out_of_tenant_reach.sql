-- Credentials have no business inside a tenant transaction (004 took login tokens and the login
-- throttle out of its reach): users' password hashes were still readable and writable there, by
-- any query of any project's transaction. The application role keeps what tenant work uses of
-- users — reading who a member is, and registration's insert of a new user (hash included) — and
-- nothing else; logins and password changes run outside tenant transactions.
REVOKE ALL ON users FROM ventros_app;
GRANT SELECT (id, email, name, created_at, updated_at) ON users TO ventros_app;
GRANT INSERT (id, email, name, password_hash) ON users TO ventros_app;
