-- Inbound encrypted and signed-data mail larger than inbound_memory_limit
-- (1024 here): never loaded into memory; delivered as it came, with
-- Authentication-Results saying why. erin's rule says decrypt = true, so
-- only the size keeps the gateway from opening it.
dofile(os.getenv("CASES") .. "/common.lua")

local function transaction(queue_id, smime_type, wanted)
  local conn = open("192.0.2.1", queue_id)
  step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
  reply(conn, SMFIR_CONTINUE, "MAIL FROM")
  step("RCPT TO", mt.rcptto(conn, "<erin@corp.example>"))
  reply(conn, SMFIR_CONTINUE, "RCPT TO")
  for _, h in ipairs({
    { "From", "outside@partner.example" }, { "To", "erin@corp.example" }, { "Subject", "Large" },
    { "MIME-Version", "1.0" },
    { "Content-Type", "application/pkcs7-mime; smime-type=" .. smime_type .. "; name=\"smime.p7m\"" },
    { "Content-Transfer-Encoding", "base64" },
  }) do
    step("header " .. h[1], mt.header(conn, h[1], h[2]))
  end
  step("EOH", mt.eoh(conn))
  -- 1,200 bytes of base64: over the limit, under max_message_size.
  step("body", mt.bodystring(conn, string.rep(string.rep("QUJD", 19) .. "\r\n", 15)))
  step("EOM", mt.eom(conn))
  reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, smime_type .. ": EOM")
  expect(smime_type .. ": Authentication-Results " .. wanted,
         mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results", " mx.corp.example;\n\t" .. wanted, 0))
  expect(smime_type .. ": the body is left alone", not mt.eom_check(conn, MT_BODYCHANGE))
  mt.disconnect(conn)
end

transaction("CASE10E", "enveloped-data", "smime=none reason=\"encrypted; too large to decrypt here\"")
transaction("CASE10S", "signed-data", "smime=neutral reason=\"signed-data too large to verify here\"")
done()
