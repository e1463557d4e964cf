-- Mail Postfix takes without SMTP (no {mail_mailer} at MAIL FROM), keystore
-- down: no recipient is refused at RCPT TO (Postfix would call that a
-- configuration error and keep the mail); the end of the message decides.
-- carol's rule says encrypt = "always": deferred whatever
-- on_keystore_unavailable says. dave's says if-possible: that setting
-- decides (the script runs once with it at tempfail, once at accept).
dofile(os.getenv("CASES") .. "/common.lua")
local expect_dave = assert(os.getenv("EXPECT_DAVE"), "EXPECT_DAVE is not set")

local function transaction(queue_id, recipient, wanted, what)
  local conn = open("127.0.0.1", queue_id, true)
  step("MAIL FROM", mt.mailfrom(conn, "<alice@corp.example>"))
  reply(conn, SMFIR_CONTINUE, "MAIL FROM")
  step("RCPT TO", mt.rcptto(conn, "<" .. recipient .. ">"))
  reply(conn, SMFIR_CONTINUE, "RCPT TO " .. recipient .. " (not refused per recipient)")
  step("header", mt.header(conn, "From", "alice@corp.example"))
  step("header", mt.header(conn, "To", recipient))
  step("EOH", mt.eoh(conn))
  step("body", mt.bodystring(conn, "The figures.\r\n"))
  step("EOM", mt.eom(conn))
  reply(conn, wanted, what)
  mt.disconnect(conn)
end

transaction("CASE9C", "carol@secret.example", SMFIR_REPLYCODE, "carol (encrypt always): deferred at end of message")
transaction("CASE9D", "dave@partner.example", expect_dave == "deferred" and SMFIR_REPLYCODE or { SMFIR_CONTINUE, SMFIR_ACCEPT },
            "dave (encrypt if-possible): " .. expect_dave)
done()
