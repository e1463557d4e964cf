-- Mail to the enrollment address alone, while the keystore that must read
-- it is down: accepted at RCPT, deferred at the end of the message (so the
-- sender's MTA retries; nothing is lost), with no edit that would deliver
-- it anywhere.
dofile(os.getenv("CASES") .. "/common.lua")

local conn = open("192.0.2.1", "CASE4")
step("MAIL FROM", mt.mailfrom(conn, "<bob@corp.example>"))
reply(conn, SMFIR_CONTINUE, "MAIL FROM")
step("RCPT TO", mt.rcptto(conn, "<mailkms-enroll@corp.example>"))
reply(conn, SMFIR_CONTINUE, "RCPT TO the enrollment address")
for _, h in ipairs({ { "From", "bob@corp.example" }, { "To", "mailkms-enroll@corp.example" },
                     { "Subject", "Re: your certificate" } }) do
  step("header " .. h[1], mt.header(conn, h[1], h[2]))
end
step("EOH", mt.eoh(conn))
step("body", mt.bodystring(conn, "enrollment code 123456\r\n"))
step("EOM", mt.eom(conn))
reply(conn, SMFIR_REPLYCODE, "EOM")
expect("deferred with 451 4.7.1",
       mt.eom_check(conn, MT_SMTPREPLY, "451", "4.7.1", "The S/MIME gateway cannot process this message now; try again later"))
expect("no recipient removed", not mt.eom_check(conn, MT_RCPTDELETE, "<mailkms-enroll@corp.example>"))
expect("no header added", not mt.eom_check(conn, MT_HDRADD) and not mt.eom_check(conn, MT_HDRINSERT))
expect("no body replaced", not mt.eom_check(conn, MT_BODYCHANGE))
mt.disconnect(conn)
done()
