-- Outbound to a recipient whose rule says encrypt = "always", keystore
-- down: the recipient is deferred at RCPT. libmilter sends a reply set with
-- smfi_setreply as SMFIR_REPLYCODE (its text is "451 4.7.1 …"), not as
-- SMFIR_TEMPFAIL; miltertest shows only that a reply code was sent, so the
-- shell script reads the milter's log for the deferral.
dofile(os.getenv("CASES") .. "/common.lua")

local conn = open("127.0.0.1", "CASE2")
step("MAIL FROM", mt.mailfrom(conn, "<alice@corp.example>"))
reply(conn, SMFIR_CONTINUE, "MAIL FROM")
step("RCPT TO", mt.rcptto(conn, "<carol@secret.example>"))
reply(conn, SMFIR_REPLYCODE, "RCPT TO carol@secret.example (encrypt always, keystore down)")
mt.disconnect(conn)
done()
