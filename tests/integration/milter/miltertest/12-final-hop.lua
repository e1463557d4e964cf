-- Where decryption happens: only where the MTA says, in {daemon_name} at
-- connect, that it is the final hop (its recipients already expanded).
-- erin's rule says decrypt = true; the keystore is down, so a decryption
-- that is tried shows as a deferral.
dofile(os.getenv("CASES") .. "/common.lua")

-- connect(QUEUE_ID, IP, DAEMON_NAME): a connection whose connect step
-- carries {daemon_name} (nil: none), as Postfix's smtpd sends it.
local function connect(queue_id, ip, daemon_name)
  mt.set_timeout(5)
  local conn = mt.connect(socket, 40, 0.05)
  if conn == nil then
    io.stderr:write("cannot connect to " .. socket .. "\n")
    os.exit(1)
  end
  if daemon_name ~= nil then step("connect macro", mt.macro(conn, SMFIC_CONNECT, "{daemon_name}", daemon_name)) end
  step("conninfo", mt.conninfo(conn, "client.example", ip))
  reply(conn, SMFIR_CONTINUE, "connect")
  step("macro", mt.macro(conn, SMFIC_MAIL, "i", queue_id, "{mail_mailer}", "smtp"))
  return conn
end

-- encrypted(CONN, SENDER, WANTED, WHAT): an encrypted message to erin; the
-- reply at its end must be WANTED.
local function encrypted(conn, sender, wanted, what)
  step("MAIL FROM", mt.mailfrom(conn, "<" .. sender .. ">"))
  step("RCPT TO", mt.rcptto(conn, "<erin@corp.example>"))
  reply(conn, SMFIR_CONTINUE, what .. ": RCPT TO")
  for _, h in ipairs({
    { "From", sender }, { "To", "erin@corp.example" }, { "Subject", "Sealed" }, { "MIME-Version", "1.0" },
    { "Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"" },
    { "Content-Transfer-Encoding", "base64" },
  }) do
    step("header " .. h[1], mt.header(conn, h[1], h[2]))
  end
  step("EOH", mt.eoh(conn))
  step("body", mt.bodystring(conn, string.rep("QUJD", 19) .. "\r\n"))
  step("EOM", mt.eom(conn))
  reply(conn, wanted, what .. ": EOM")
end

-- The entry smtpd ({daemon_name} its host name): left encrypted, saying why.
local conn = connect("CASE12E", "192.0.2.1", "mx.corp.example")
encrypted(conn, "outside@partner.example", { SMFIR_CONTINUE, SMFIR_ACCEPT }, "entry")
expect("entry: Authentication-Results says it is decrypted only at the final hop",
       mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results",
                    " mx.corp.example;\n\tsmime=none reason=\"encrypted; decrypted only at the final hop\"", 0))
expect("entry: the body is left alone", not mt.eom_check(conn, MT_BODYCHANGE))
mt.disconnect(conn)

-- No {daemon_name} at all (an MTA that sends none): not the final hop either.
conn = connect("CASE12N", "192.0.2.1", nil)
encrypted(conn, "outside@partner.example", { SMFIR_CONTINUE, SMFIR_ACCEPT }, "no daemon name")
expect("no daemon name: the body is left alone", not mt.eom_check(conn, MT_BODYCHANGE))
mt.disconnect(conn)

-- The final hop: decryption is tried, and waits for the keystore.
conn = connect("CASE12F", "127.0.0.1", "mailkms-final-hop")
encrypted(conn, "outside@partner.example", SMFIR_REPLYCODE, "final hop")
mt.disconnect(conn)

-- At the final hop nothing is signed: its client is the MTA itself. bob
-- from 10.1.2.3 (of unauthenticated_networks) would sign anywhere else.
conn = connect("CASE12L", "10.1.2.3", "mailkms-final-hop")
step("MAIL FROM", mt.mailfrom(conn, "<bob@corp.example>"))
step("RCPT TO", mt.rcptto(conn, "<x@plain.example>"))
reply(conn, SMFIR_CONTINUE, "final hop, local sender: RCPT TO")
for _, h in ipairs({ { "From", "bob@corp.example" }, { "To", "x@plain.example" }, { "Subject", "Plain" } }) do
  step("header " .. h[1], mt.header(conn, h[1], h[2]))
end
step("EOH", mt.eoh(conn))
step("body", mt.bodystring(conn, "Hello.\r\n"))
step("EOM", mt.eom(conn))
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "final hop, local sender: EOM")
expect("final hop, local sender: the body is left alone", not mt.eom_check(conn, MT_BODYCHANGE))
mt.disconnect(conn)
done()
