-- The enrollment address beside a real recipient, while the keystore is
-- down: the whole message is deferred rather than delivered to bob with
-- the enrollment reply unread (the Postfix tests cover the keystore up).
dofile(os.getenv("CASES") .. "/common.lua")

local conn = open("192.0.2.1", "CASE5")
step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
reply(conn, SMFIR_CONTINUE, "MAIL FROM")
step("RCPT TO enrollment", mt.rcptto(conn, "<mailkms-enroll@corp.example>"))
reply(conn, SMFIR_CONTINUE, "RCPT TO the enrollment address")
step("RCPT TO bob", mt.rcptto(conn, "<bob@corp.example>"))
reply(conn, SMFIR_CONTINUE, "RCPT TO bob")
for _, h in ipairs({ { "From", "outside@partner.example" }, { "To", "bob@corp.example, mailkms-enroll@corp.example" },
                     { "Subject", "Both" } }) do
  step("header " .. h[1], mt.header(conn, h[1], h[2]))
end
step("EOH", mt.eoh(conn))
step("body", mt.bodystring(conn, "text\r\n"))
step("EOM", mt.eom(conn))
reply(conn, SMFIR_REPLYCODE, "EOM")
expect("deferred with 451 4.7.1", mt.eom_check(conn, MT_SMTPREPLY, "451", "4.7.1", "The S/MIME gateway cannot process this message now; try again later"))
expect("no recipient removed", not mt.eom_check(conn, MT_RCPTDELETE, "<mailkms-enroll@corp.example>"))
expect("no header added", not mt.eom_check(conn, MT_HDRINSERT))
mt.disconnect(conn)
done()
