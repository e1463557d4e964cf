-- Shared by the case scripts. miltertest prints nothing for a Lua error(),
-- only its exit code: every check here says on stderr what failed.

socket = "unix:" .. assert(os.getenv("MILTER_SOCKET"), "MILTER_SOCKET is not set")
failures = 0

local names = {}
for _, n in ipairs({ "CONTINUE", "ACCEPT", "REJECT", "TEMPFAIL", "DISCARD", "REPLYCODE", "SKIP" }) do
  names[_G["SMFIR_" .. n]] = "SMFIR_" .. n
end
local function reply_name(r)
  return names[r] or string.format("%q", string.char(r))
end

-- expect(WHAT, OK): counts a failed check and goes on.
function expect(what, ok)
  if not ok then
    io.stderr:write("not ok: " .. what .. "\n")
    failures = failures + 1
  end
end

-- step(WHAT, RESULT): an mt.* call returns nil on success; anything else
-- ends the script, since the exchange cannot go on.
function step(what, result)
  if result ~= nil then
    io.stderr:write(what .. " failed: " .. tostring(result) .. "\n")
    os.exit(1)
  end
end

-- reply(CONN, WANTED, WHAT): the last reply must be WANTED (or one of a list).
function reply(conn, wanted, what)
  local got = mt.getreply(conn)
  if type(wanted) ~= "table" then wanted = { wanted } end
  for _, w in ipairs(wanted) do
    if got == w then return true end
  end
  local want = {}
  for _, w in ipairs(wanted) do want[#want + 1] = reply_name(w) end
  expect(what .. ": reply " .. reply_name(got) .. ", expected " .. table.concat(want, " or "), false)
  return false
end

-- open(IP, QUEUE_ID[, WITHOUT_SMTP]): a negotiated connection from IP. Its
-- MAIL FROM carries the macros Postfix's smtpd gives; with WITHOUT_SMTP,
-- those its cleanup gives for mail taken without SMTP (sendmail), where
-- {mail_mailer} is missing and no recipient may be refused at RCPT TO.
function open(ip, queue_id, without_smtp)
  mt.set_timeout(5)
  local conn = mt.connect(socket, 40, 0.05)
  if conn == nil then
    io.stderr:write("cannot connect to " .. socket .. "\n")
    os.exit(1)
  end
  step("conninfo", mt.conninfo(conn, "client.example", ip))
  reply(conn, SMFIR_CONTINUE, "connect")
  -- The queue id is in every log line of the milter.
  if without_smtp then
    step("macro", mt.macro(conn, SMFIC_MAIL, "i", queue_id))
  else
    step("macro", mt.macro(conn, SMFIC_MAIL, "i", queue_id, "{mail_mailer}", "smtp"))
  end
  return conn
end

-- open_as(HOST, IP, QUEUE_ID, MACROS): a negotiated connection whose
-- connect step names HOST and IP (IP "unspec": the MTA knows no address,
-- as after a PROXY "UNKNOWN" or an XCLIENT ADDR=[UNAVAILABLE]); MACROS, a
-- table of name = value, are given at MAIL FROM with the queue id.
function open_as(host, ip, queue_id, macros)
  mt.set_timeout(5)
  local conn = mt.connect(socket, 40, 0.05)
  if conn == nil then
    io.stderr:write("cannot connect to " .. socket .. "\n")
    os.exit(1)
  end
  step("conninfo", mt.conninfo(conn, host, ip))
  reply(conn, SMFIR_CONTINUE, "connect")
  local args = { "i", queue_id }
  for name, value in pairs(macros or {}) do
    args[#args + 1] = name
    args[#args + 1] = value
  end
  step("macro", mt.macro(conn, SMFIC_MAIL, table.unpack(args)))
  return conn
end

-- done(): the script's exit code is the number of failed checks.
function done()
  if failures > 0 then
    io.stderr:write(failures .. " check(s) failed\n")
    os.exit(1)
  end
end
