-- Who, as the operating system knows them, gave a command from the CLI: `--as` is a
-- claim, the OS user (uid, name, and SUDO_USER under sudo) is what the shell was.
ALTER TABLE commands ADD COLUMN os_user TEXT;
ALTER TABLE settings ADD COLUMN os_user TEXT;
-- The OS user who opened the incident from the CLI (`run`, `trigger`); NULL for serve.
ALTER TABLE incidents ADD COLUMN os_user TEXT;
-- The playbook's approver → OS user map, pinned with the incident (JSON object): the
-- CLI refuses `approve --as NAME` from any other OS user.
ALTER TABLE incidents ADD COLUMN approver_os_users TEXT NOT NULL DEFAULT '{}';
