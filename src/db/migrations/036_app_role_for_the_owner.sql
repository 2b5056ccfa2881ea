-- Every tenant transaction switches to ventros_app (SET LOCAL ROLE, so that row-level security
-- applies: src/db/transaction.ts). A superuser may switch to any role; the usual production login —
-- the database's owner, not a superuser — may only switch to a role it is a member of, and nothing
-- made it one: every request that touches a project's data failed ("permission denied to set role").
-- The role that runs the migrations, which must be the one the application connects as (it owns
-- the tables: docs/architecture.md, "Roles and the database"), is granted the role here. What is
-- checked is the right to switch to it: PostgreSQL 16 and later give a role's creator admin rights
-- over it (membership, to pg_has_role's MEMBER) but not SET.
DO $$
BEGIN
  IF NOT pg_has_role(current_user, 'ventros_app', CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END) THEN
    EXECUTE format('GRANT ventros_app TO %I', current_user);
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE EXCEPTION 'the database user "%" cannot be granted the role ventros_app, which every request switches to', current_user
    USING HINT = format('as a superuser, run: GRANT ventros_app TO %I; then migrate again', current_user);
END $$;
