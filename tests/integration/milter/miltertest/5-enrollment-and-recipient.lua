-- The enrollment address beside a real recipient: it is taken out of the
-- envelope and the message goes on to bob as inbound plain mail.
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
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "EOM")
expect("the enrollment recipient is removed",
       mt.eom_check(conn, MT_RCPTDELETE, "<mailkms-enroll@corp.example>"))
expect("bob stays", not mt.eom_check(conn, MT_RCPTDELETE, "<bob@corp.example>"))
expect("bob's copy gets Authentication-Results smime=none",
       mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results", " mx.corp.example;\n\tsmime=none", 0))
mt.disconnect(conn)
done()
