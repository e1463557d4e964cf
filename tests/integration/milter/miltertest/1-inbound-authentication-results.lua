-- Inbound plain mail: our forged Authentication-Results goes, another
-- host's stays, and ours (smime=none) goes on top.
dofile(os.getenv("CASES") .. "/common.lua")

local conn = open("192.0.2.1", "CASE1")
expect("SMFIP_HDR_LEADSPC negotiated", mt.test_option(conn, SMFIP_HDR_LEADSPC))
step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
reply(conn, SMFIR_CONTINUE, "MAIL FROM")
step("RCPT TO", mt.rcptto(conn, "<bob@corp.example>"))
reply(conn, SMFIR_CONTINUE, "RCPT TO")
-- SMFIP_HDR_LEADSPC is negotiated: miltertest itself puts the space after
-- the colon in front of each value, as an MTA would.
local headers = {
  { "From", "Outside <outside@partner.example>" },
  { "To", "bob@corp.example" },
  { "Subject", "Hello" },
  { "Authentication-Results", "mx.corp.example; smime=pass" },
  { "Authentication-Results", "other.example; dkim=pass header.d=partner.example" },
  { "MIME-Version", "1.0" },
  { "Content-Type", "text/plain; charset=us-ascii" },
}
for _, h in ipairs(headers) do
  step("header " .. h[1], mt.header(conn, h[1], h[2]))
  reply(conn, SMFIR_CONTINUE, "header " .. h[1])
end
step("EOH", mt.eoh(conn))
reply(conn, SMFIR_CONTINUE, "EOH")
step("body", mt.bodystring(conn, "Hello Bob.\r\n"))
reply(conn, SMFIR_CONTINUE, "body")
step("EOM", mt.eom(conn))
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "EOM")

expect("the forged Authentication-Results (1st) is deleted",
       mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 1))
expect("other.example's Authentication-Results (2nd) is kept",
       not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 2))
expect("no other header is changed or deleted",
       not mt.eom_check(conn, MT_HDRCHANGE, "From") and not mt.eom_check(conn, MT_HDRCHANGE, "To") and
       not mt.eom_check(conn, MT_HDRCHANGE, "Subject"))
expect("Authentication-Results ' mx.corp.example;\\n\\tsmime=none' inserted at index 0",
       mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results", " mx.corp.example;\n\tsmime=none", 0))
expect("nothing appended at the end", not mt.eom_check(conn, MT_HDRADD))
expect("the body is left alone", not mt.eom_check(conn, MT_BODYCHANGE))
expect("not quarantined", not mt.eom_check(conn, MT_QUARANTINE))
mt.disconnect(conn)
done()
