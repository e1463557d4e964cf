-- Who may sign as whom, for each way a submission can arrive, with the
-- keystore down: a message whose signer is authorized makes the gateway ask
-- the keystore for that signing key, and is deferred (451 4.7.1); one whose
-- signer is not is never signed, so nothing needs the keystore and it goes
-- on unsigned (recipients at plain.example are never encrypted), or, where
-- a rule says sign = "always", is refused with 550 5.7.1. The shell script
-- reads the milter's log for each reason.
--
-- PHASE "first": the policy of miltertest_test.sh; PHASE "reloaded": after
-- SIGHUP with local_submission = true and "assistant" out of the login map.
dofile(os.getenv("CASES") .. "/common.lua")
local phase = assert(os.getenv("PHASE"), "PHASE is not set")
local smtp = { ["{mail_mailer}"] = "smtp" }

local function as_login(login)
  return { ["{mail_mailer}"] = "smtp", ["{auth_type}"] = "PLAIN", ["{auth_authen}"] = login }
end

-- One message; WANTED is "signing" (the keystore was asked: deferred),
-- "unsigned" (went on without a signature) or "refused" (550 5.7.1 with
-- the text WHY).
local function submission(id, host, ip, macros, sender, author, recipient, wanted, why)
  local conn = open_as(host, ip, id, macros)
  step("MAIL FROM", mt.mailfrom(conn, "<" .. sender .. ">"))
  step("RCPT TO", mt.rcptto(conn, "<" .. recipient .. ">"))
  reply(conn, SMFIR_CONTINUE, id .. ": RCPT TO " .. recipient)
  step("header", mt.header(conn, "From", author))
  step("header", mt.header(conn, "To", recipient))
  step("header", mt.header(conn, "Subject", "Figures"))
  step("EOH", mt.eoh(conn))
  step("body", mt.bodystring(conn, "The figures.\r\n"))
  step("EOM", mt.eom(conn))
  if wanted == "signing" then
    reply(conn, SMFIR_REPLYCODE, id .. ": authorized, the keystore asked for the key")
    expect(id .. ": deferred with 451 4.7.1", mt.eom_check(conn, MT_SMTPREPLY, "451", "4.7.1",
                                                          "The S/MIME gateway cannot process this message now; try again later"))
  elseif wanted == "refused" then
    reply(conn, SMFIR_REPLYCODE, id .. ": not authorized, sign always")
    expect(id .. ": refused with 550 5.7.1 " .. why, mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1", why))
  else
    reply(conn, { SMFIR_CONTINUE, SMFIR_ACCEPT }, id .. ": not authorized, delivered unsigned")
    expect(id .. ": the body is not replaced", not mt.eom_check(conn, MT_BODYCHANGE))
  end
  mt.disconnect(conn)
end

if phase == "first" then
  -- SMTP AUTH: the login itself, when it is an address.
  submission("SIGN1", "client.example", "192.0.2.7", as_login("bob@corp.example"),
             "bob@corp.example", "Bob <bob@corp.example>", "x@plain.example", "signing")
  submission("SIGN2", "client.example", "192.0.2.7", as_login("bob@corp.example"),
             "bob@corp.example", "The CEO <ceo@corp.example>", "x@plain.example", "unsigned")
  -- The envelope sender does not help: the login must own the author.
  submission("SIGN3", "client.example", "192.0.2.7", as_login("bob@corp.example"),
             "ceo@corp.example", "ceo@corp.example", "x@plain.example", "unsigned")
  -- A login that is not an address owns what the login map gives it.
  submission("SIGN4", "client.example", "192.0.2.7", as_login("assistant"),
             "assistant@corp.example", "ceo@corp.example", "x@plain.example", "signing")
  submission("SIGN5", "client.example", "192.0.2.7", as_login("assistant"),
             "bob@corp.example", "bob@corp.example", "x@plain.example", "unsigned")
  -- sign = "always" and an author the login does not own.
  submission("SIGN6", "client.example", "192.0.2.7", as_login("bob@corp.example"),
             "bob@corp.example", "ceo@corp.example", "x@signed.example", "refused",
             "Policy requires signing, and this submission may not sign as ceo@corp.example: " ..
             "login bob@corp.example does not own it")
  -- Unauthenticated, from a network allowed to sign: From must be the sender.
  submission("SIGN7", "client.example", "10.1.2.3", smtp,
             "bob@corp.example", "bob@corp.example", "x@plain.example", "signing")
  submission("SIGN8", "client.example", "10.1.2.3", smtp,
             "bob@corp.example", "Alice <alice@corp.example>", "x@plain.example", "unsigned")
  -- Internal, but not allowed to sign unauthenticated.
  submission("SIGN9", "client.example", "10.2.0.5", smtp,
             "bob@corp.example", "bob@corp.example", "x@plain.example", "unsigned")
  -- Local submission (Postfix's stand-in client for mail taken without
  -- SMTP: "localhost", 127.0.0.1, no {mail_mailer}), not allowed to sign.
  submission("SIGN10", "localhost", "127.0.0.1", {},
             "alice@corp.example", "alice@corp.example", "x@plain.example", "unsigned")
  -- No client address known (PROXY UNKNOWN, XCLIENT ADDR=[UNAVAILABLE]):
  -- not local submission, and not internal: inbound.
  submission("LOCAL1", "localhost", "unspec", smtp,
             "alice@corp.example", "alice@corp.example", "x@plain.example", "unsigned")
  submission("LOCAL2", "localhost", "unspec", {},
             "alice@corp.example", "alice@corp.example", "x@plain.example", "unsigned")
else
  -- After the reload: local submission may sign, "assistant" owns nothing.
  submission("SIGN11", "localhost", "127.0.0.1", {},
             "alice@corp.example", "alice@corp.example", "x@plain.example", "signing")
  submission("SIGN12", "localhost", "127.0.0.1", {},
             "alice@corp.example", "bob@corp.example", "x@plain.example", "unsigned")
  submission("SIGN13", "client.example", "192.0.2.7", as_login("assistant"),
             "assistant@corp.example", "ceo@corp.example", "x@plain.example", "unsigned")
end
done()
