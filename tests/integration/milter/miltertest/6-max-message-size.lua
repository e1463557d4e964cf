-- max_message_size = 2048 counts the header section and the body: a
-- message of exactly 2048 bytes passes, one of 2049 is refused (552 5.3.4,
-- seen here as SMFIR_REPLYCODE) at the end of the message, since the MTA
-- does not wait for an answer to each body chunk (SMFIP_NR_BODY; libmilter
-- answers CONTINUE for us to an MTA that does not offer it), and the
-- connection can carry the next transaction.
dofile(os.getenv("CASES") .. "/common.lua")

local limit = 2048
local headers = { { "From", "outside@partner.example" }, { "To", "bob@corp.example" }, { "Subject", "Size" } }
-- As the milter spools it: "Name: value\r\n" per field (miltertest sends
-- the space, SMFIP_HDR_LEADSPC being negotiated), then "\r\n".
local header_bytes = 2
for _, h in ipairs(headers) do header_bytes = header_bytes + #h[1] + 2 + #h[2] + 2 end

local conn = open("192.0.2.1", "CASE6")
local function transaction(body_size, chunk)
  step("MAIL FROM", mt.mailfrom(conn, "<outside@partner.example>"))
  reply(conn, SMFIR_CONTINUE, "MAIL FROM")
  step("RCPT TO", mt.rcptto(conn, "<bob@corp.example>"))
  reply(conn, SMFIR_CONTINUE, "RCPT TO")
  for _, h in ipairs(headers) do step("header " .. h[1], mt.header(conn, h[1], h[2])) end
  step("EOH", mt.eoh(conn))
  local sent = 0
  while sent < body_size do
    local n = math.min(chunk, body_size - sent)
    step("body", mt.bodystring(conn, string.rep("x", n)))
    sent = sent + n
    if mt.getreply(conn) ~= SMFIR_CONTINUE then return sent end
  end
  return sent
end

-- Exactly at the limit.
local sent = transaction(limit - header_bytes, 1000)
if not reply(conn, SMFIR_CONTINUE, "body of a message of exactly " .. limit .. " bytes") then done() end
step("EOM", mt.eom(conn))
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "EOM of a message of exactly " .. limit .. " bytes")

-- One byte over, then a far larger one in chunks as large as libmilter
-- takes by default (MILTER_CHUNK_SIZE): every chunk is taken, the end of
-- the message refused.
for _, size in ipairs({ { limit - header_bytes + 1, 1000 }, { 200000, 65535 } }) do
  local what = "a message with " .. size[1] .. " body bytes"
  sent = transaction(size[1], size[2])
  expect(what .. ": every chunk taken (" .. sent .. " sent)", sent == size[1])
  reply(conn, SMFIR_CONTINUE, what .. ": the last chunk")
  step("EOM", mt.eom(conn))
  reply(conn, SMFIR_REPLYCODE, what .. ": end of message")
end

-- The connection still carries a good message.
transaction(10, 10)
if not reply(conn, SMFIR_CONTINUE, "body after two refusals") then done() end
step("EOM", mt.eom(conn))
reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, "EOM after two refusals")
expect("and it is processed (Authentication-Results inserted)",
       mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results", " mx.corp.example;\n\tsmime=none", 0))
mt.disconnect(conn)
done()
