-- Clients that go away mid-message (politely after a header, abruptly in
-- the body, with an abort before the body) leave the milter serving: a
-- full exchange passes afterwards.
dofile(os.getenv("CASES") .. "/common.lua")

local function start(queue_id)
  local conn = open("192.0.2.1", queue_id)
  step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
  step("RCPT TO", mt.rcptto(conn, "<bob@corp.example>"))
  step("header", mt.header(conn, "From", "outside@partner.example"))
  reply(conn, SMFIR_CONTINUE, queue_id .. " header")
  return conn
end

-- A QUIT after a header.
mt.disconnect(start("CASE7A"), true)
-- The socket closed without QUIT, in the body.
local conn = start("CASE7B")
step("EOH", mt.eoh(conn))
step("body", mt.bodystring(conn, "half a mess"))
mt.disconnect(conn, false)
-- Only MAIL FROM, then gone.
conn = open("192.0.2.1", "CASE7C")
step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
mt.disconnect(conn, false)
-- An abort after a header, then a whole message on the same connection.
conn = start("CASE7D")
step("abort", mt.abort(conn))
step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
reply(conn, SMFIR_CONTINUE, "MAIL FROM after abort")
step("RCPT TO", mt.rcptto(conn, "<bob@corp.example>"))
step("header", mt.header(conn, "Authentication-Results", "mx.corp.example; smime=pass"))
step("EOH", mt.eoh(conn))
step("body", mt.bodystring(conn, "text\r\n"))
step("EOM", mt.eom(conn))
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "EOM after abort")
expect("after abort: forged result deleted", mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 1))
mt.disconnect(conn)

-- A fresh connection: the case 1 exchange, in short.
conn = open("192.0.2.1", "CASE7E")
step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
step("RCPT TO", mt.rcptto(conn, "<bob@corp.example>"))
reply(conn, SMFIR_CONTINUE, "RCPT TO on a fresh connection")
step("header", mt.header(conn, "Authentication-Results", "mx.corp.example; smime=pass"))
step("header", mt.header(conn, "Authentication-Results", "other.example; dkim=pass"))
step("EOH", mt.eoh(conn))
step("body", mt.bodystring(conn, "text\r\n"))
step("EOM", mt.eom(conn))
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "EOM on a fresh connection")
expect("fresh: forged result deleted", mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 1))
expect("fresh: other.example's kept", not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 2))
expect("fresh: ours inserted",
       mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results", " mx.corp.example;\n\tsmime=none", 0))
mt.disconnect(conn)
done()
