-- Outbound to a recipient no rule names (encrypt = "if-possible"), keystore
-- down: on_keystore_unavailable = "tempfail" (the default) defers it too.
-- As in case 2, miltertest sees SMFIR_REPLYCODE, not the reply's text.
dofile(os.getenv("CASES") .. "/common.lua")

local conn = open("127.0.0.1", "CASE3")
step("MAIL FROM", mt.mailfrom(conn, "<alice@corp.example>"))
reply(conn, SMFIR_CONTINUE, "MAIL FROM")
step("RCPT TO", mt.rcptto(conn, "<dave@partner.example>"))
reply(conn, SMFIR_REPLYCODE, "RCPT TO dave@partner.example (encrypt if-possible, keystore down)")
mt.disconnect(conn)
done()
