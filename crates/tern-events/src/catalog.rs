//! The catalogue of every operational event Tern emits.
//!
//! Each event has a stable numeric id that never changes meaning once released, a dotted
//! name, a severity, and the operator-facing text that `docs/EVENTS.md` repeats. Ids are
//! grouped by thousands: 1xxx server lifecycle, 2xxx inbound SMTP, 3xxx spool, 4xxx queue
//! and delivery, 5xxx watchdog, 6xxx local delivery, connectors and conversion.
//!
//! Invariant: ids are unique and `ALL` lists every event (checked by a unit test and by a
//! test that compares this table with `docs/EVENTS.md`).

use crate::{EventDef, Severity};

/// Defines the events. An entry may end with `track = "step"`: its occurrences are also
/// written to the message tracking log as that step of a message's life (`crate::tracking`),
/// whatever the log level. A tracked event names the message in a `queue_id` (or `id`)
/// field.
macro_rules! events {
    (@track) => { None };
    (@track $step:literal) => { Some($step) };
    ($( $(#[$doc:meta])* $ident:ident = ($id:literal, $name:literal, $sev:ident, $summary:literal, $action:literal $(, track = $step:literal)?); )*) => {
        $(
            $(#[$doc])*
            pub const $ident: EventDef = EventDef {
                id: $id,
                name: $name,
                severity: Severity::$sev,
                summary: $summary,
                action: $action,
                track: events!(@track $($step)?),
            };
        )*
        /// Every event in the catalogue, in id order.
        pub const ALL: &[EventDef] = &[$($ident),*];
    };
}

events! {
    SERVER_STARTED = (1001, "server.started", Info,
        "Tern started and recovered its spool; fields give the version, host name and data directory.",
        "None.");
    SERVER_STOPPING = (1002, "server.stopping", Info,
        "Tern received a stop request and is refusing new connections while sessions finish.",
        "None; if it does not stop within the grace period, sessions are cut.");
    SERVER_STOPPED = (1003, "server.stopped", Info,
        "Tern stopped; every acknowledged message is on disk.",
        "None.");
    LISTENER_STARTED = (1004, "listener.started", Info,
        "A listener is bound and accepting connections.",
        "None.");
    LISTENER_FAILED = (1005, "listener.failed", Error,
        "A listener could not be bound or stopped accepting.",
        "Check that the address is free and that Tern may bind it (ports below 1024 need privileges).");
    ACCEPT_FAILED = (1006, "listener.accept.failed", Warning,
        "accept() failed on a listener (for example, out of file descriptors); Tern backs off and retries.",
        "Raise the open-file limit or lower the connection limits.");
    SERVER_RELOADED = (1007, "server.reloaded", Info,
        "The configuration was reloaded (SIGHUP or `tern reload`); new messages use the new routes, deliveries in progress finish on the old ones.",
        "None.");
    SERVER_RELOAD_FAILED = (1008, "server.reload.failed", Error,
        "A reload was refused because the new configuration has errors (listed in the event); the old configuration stays in force.",
        "Fix the errors (`tern check-config FILE` lists them) and reload again.");

    SMTP_SESSION_STARTED = (2001, "smtp.session.started", Info,
        "A client connected; fields give its address, its verified reverse-DNS name and the listener.",
        "None.");
    SMTP_SESSION_ENDED = (2002, "smtp.session.ended", Info,
        "A session ended; fields say how many messages it queued and why it ended.",
        "None.");
    SMTP_MESSAGE_QUEUED = (2003, "smtp.message.queued", Info,
        "A message was written and synced to the spool and acknowledged with 250.",
        "None.", track = "received");
    SMTP_RELAY_DENIED = (2004, "smtp.relay.denied", Notice,
        "A recipient was refused because Tern does not receive mail for its domain and the client is not in a relay network (554 5.7.1).",
        "If the client should relay, add its network to relay.networks; if the domain is ours, add it to relay.domains.");
    SMTP_CONNECTION_LIMIT = (2005, "smtp.connection.limit", Warning,
        "A connection was refused with 421 4.7.0 because a connection limit was reached and no idle session could give way; field `limit`: Total (the listener is full), Reserved (only the places kept for relay networks are left) or PerClient (the client's address, or its IPv6 /64, has max_connections_per_client already).",
        "Raise the listener's max_connections or max_connections_per_client if the load is legitimate; many refusals from one network are a flood.");
    SMTP_TOO_MANY_ERRORS = (2006, "smtp.errors.limit", Notice,
        "A session was closed with 421 after too many erroneous commands.",
        "None; usually a broken or hostile client.");
    SMTP_TIMEOUT = (2007, "smtp.timeout", Notice,
        "A session was closed with 421 4.4.2 because the client did not keep up: a command line did not arrive whole within timeouts.command, message content stopped progressing (timeouts.data, min_data_rate), or a reply or TLS handshake could not be completed in time; field `stage` says which.",
        "None, unless legitimate clients are affected: then raise the timeout (or lower min_data_rate).");
    SMTP_TLS_FAILED = (2008, "smtp.tls.failed", Warning,
        "A TLS handshake failed (STARTTLS or implicit TLS).",
        "Check the certificate files if this happens for every client.");
    SMTP_SPOOL_FAILED = (2009, "smtp.spool.failed", Error,
        "A message could not be written to the spool and was refused with 451 4.3.0; the client will retry.",
        "Check the spool disk (space, permissions, I/O errors).");
    SMTP_BACK_PRESSURE = (2010, "smtp.back_pressure.refused", Notice,
        "A transaction was refused with 452 4.3.1 because the spool is in back pressure.",
        "See event 3004.");
    SMTP_CONNECTION_LOST = (2011, "smtp.connection.lost", Info,
        "The client closed the connection or a socket error ended the session before QUIT.",
        "None.");
    SMTP_SESSION_LIMIT = (2012, "smtp.session.limit", Notice,
        "A session was closed with 421 4.4.2 because it lasted longer than the listener's timeouts.session (a message still arriving was given timeouts.data more).",
        "None; the client reconnects. If legitimate clients need longer sessions, raise timeouts.session.");
    SMTP_JUNK_LIMIT = (2013, "smtp.junk.limit", Notice,
        "A session was closed with 421 4.7.0 after more NOOP, RSET, HELP, VRFY or EXPN commands than max_junk_commands (stress.max_junk_commands in stress) without queueing a message.",
        "None; usually a client holding a connection open or probing addresses.");
    SMTP_IDLE_EVICTED = (2014, "smtp.connection.evicted", Notice,
        "The listener was full, so the session idle longest (no transaction open) was closed with 421 4.7.0 to let a new client in.",
        "None if rare. Many of these mean the listener is full of idle connections: look for a flood from the clients named, or raise max_connections.");
    SMTP_STRESS_ON = (2015, "smtp.listener.stress.on", Warning,
        "The listener's connections in use reached stress.enter_percent of max_connections: every session now works under the stress timeouts and limits.",
        "Check for a connection flood (events 2005, 2014); if the load is legitimate, raise max_connections.");
    SMTP_STRESS_OFF = (2016, "smtp.listener.stress.off", Info,
        "The listener's connections in use fell below stress.leave_percent of max_connections: the normal timeouts and limits apply again.",
        "None.");

    // SMTP AUTH and submission (2101-2129).
    SMTP_AUTH_SUCCEEDED = (2101, "smtp.auth.succeeded", Info,
        "A client authenticated (SMTP AUTH): fields give the client, the listener, the mechanism and the user.",
        "None.");
    SMTP_AUTH_FAILED = (2102, "smtp.auth.failed", Notice,
        "An SMTP AUTH attempt failed: `reason` says why (wrong_password, unknown_user, no_scram_keys, refused, locked); the client got 535 5.7.8 (454 4.7.0 when locked), the same for an unknown user as for a wrong password.",
        "None if occasional. Many from one client are a password-guessing attempt: the lockout (event 2103) stops it; block the network at the firewall if it goes on.");
    SMTP_AUTH_LOCKOUT = (2103, "smtp.auth.lockout", Warning,
        "Too many failed authentications: a client network (`kind` client: an IPv4 address or IPv6 /64) or a user name (`kind` user) is locked out for `seconds`; AUTH is answered 454 4.7.0 meanwhile, even with the right password. One event per lockout.",
        "A client lockout is usually a password-guessing bot. A user lockout may also be a user's device with an old password: tell the user; the lockout ends by itself (auth.lockout_secs).");
    SMTP_AUTH_UNAVAILABLE = (2104, "smtp.auth.unavailable", Error,
        "SMTP AUTH could not be answered because the credential source failed (Dovecot's socket unreachable or timing out, no passwd-file loaded); the client got 454 4.7.0 and may retry.",
        "Check that Dovecot runs and that auth.dovecot_socket names its auth listener (with permissions for Tern's user), or fix the passwd-file (event 2106).");
    AUTH_PASSWD_LOADED = (2105, "auth.passwd.loaded", Info,
        "The passwd-file (auth.passwd_file) was read at start or reload; `users` gives how many users it lists.",
        "None.");
    AUTH_PASSWD_FAILED = (2106, "auth.passwd.failed", Error,
        "The passwd-file could not be loaded (its problems are listed as file:line, or the file was refused for its mode, owner or a symbolic link); the previously loaded file stays in force (at start: none, and AUTH answers 454 4.7.0).",
        "Fix the file (`chmod 0640`, owner root or Tern's user; the line named) and reload.");
    SMTP_SENDER_MISMATCH = (2107, "smtp.sender.mismatch", Notice,
        "An authenticated user used a sender address it does not own according to the sender-login map (auth.sender_login_map): `where` is envelope (MAIL FROM, refused 553 5.7.1) or header (a From address, the message refused 553 5.7.1 at the end of DATA).",
        "If the user should send as that address, add it to the sender-login map and reload; otherwise it is a compromised account or a misconfigured client.");
    AUTH_SENDER_MAP_LOADED = (2108, "auth.sender_map.loaded", Info,
        "The sender-login map (auth.sender_login_map) was read at start or reload; `entries` gives its size.",
        "None.");
    AUTH_SENDER_MAP_FAILED = (2109, "auth.sender_map.failed", Error,
        "The sender-login map could not be loaded (its problems are listed as file:line, or the file was refused for its mode, owner or a symbolic link); the previous map stays in force (at start: none, and every sender of an authenticated user but <> is refused).",
        "Fix the file and reload.");
    AUTH_DOVECOT_CONNECTED = (2110, "auth.dovecot.connected", Info,
        "At start Tern reached Dovecot's auth socket (auth.dovecot_socket); `mechanisms` lists what Dovecot offers (AUTH advertises the configured mechanisms Dovecot offers).",
        "None; if a mechanism you listed in auth.mechanisms is missing, add it to Dovecot's auth_mechanisms.");

    // Rate limits (tern-limits, docs/LIMITS.md): ids 2131-2149. Each is logged once per
    // key and window, however many commands the limit refuses in that window.
    LIMIT_CLIENT_CONNECTIONS = (2131, "smtp.limit.client_connections", Notice,
        "A client network (field `key`: the address, or its limits.client_prefix_v4/v6 network) opened more connections than limits.client_connections allows; new connections get 421 4.7.0 before the greeting (closed without a reply on an implicit-TLS listener) until its allowance comes back (`retry_after_secs`). Logged once per network and window.",
        "None if the client is hostile or misconfigured. If it is a legitimate sender (a partner's relay), add it to relay.networks (exempt while limits.exempt_relay_networks) or raise limits.client_connections.");
    LIMIT_CLIENT_MESSAGES = (2132, "smtp.limit.client_messages", Notice,
        "A client network sent more messages (MAIL FROM) than limits.client_messages allows; further MAIL commands get 451 4.7.1 until its allowance comes back (`retry_after_secs`). Logged once per network and window.",
        "None for a spam run; the client retries later. For a legitimate bulk sender, raise limits.client_messages or exempt it through relay.networks.");
    LIMIT_RECIPIENTS_PER_MESSAGE = (2133, "smtp.limit.recipients_per_message", Info,
        "A transaction reached the listener's max_recipients: the recipients past it got 452 4.5.3, which tells a client to send them in another transaction (RFC 5321 4.5.3.1.10). Logged once per message.",
        "None; raise the listener's max_recipients if legitimate mail is split too often.");
    LIMIT_USER_MESSAGES = (2134, "smtp.limit.user_messages", Warning,
        "An authenticated user sent more messages than limits.user_messages allows; further MAIL commands get 451 4.7.1 until its allowance comes back. Logged once per user and window.",
        "Check the account: a sudden burst from one user is often a stolen password. Raise limits.user_messages if the volume is legitimate.");
    LIMIT_USER_RECIPIENTS = (2135, "smtp.limit.user_recipients", Warning,
        "An authenticated user addressed more recipients than limits.user_recipients allows; further RCPT commands get 451 4.7.1 until its allowance comes back. Logged once per user and window.",
        "Check the account (see 2134); raise limits.user_recipients for a legitimate mailing.");
    LIMIT_SENDER_DOMAIN_MESSAGES = (2136, "smtp.limit.sender_domain_messages", Notice,
        "Mail from one sender domain (the MAIL FROM address's domain) passed limits.sender_domain_messages; further MAIL commands with that domain get 451 4.7.1 until its allowance comes back. Logged once per domain and window.",
        "If the domain is yours, look for a compromised client or application; raise the limit for legitimate volume. The sender domain can be forged by anyone: see docs/LIMITS.md before using it on an MX open to the internet.");
    LIMIT_SENDER_DOMAIN_RECIPIENTS = (2137, "smtp.limit.sender_domain_recipients", Notice,
        "Mail from one sender domain addressed more recipients than limits.sender_domain_recipients allows; further RCPT commands get 451 4.7.1 until its allowance comes back. Logged once per domain and window.",
        "As for 2136.");
    LIMIT_CLIENT_RECIPIENTS = (2138, "smtp.limit.client_recipients", Notice,
        "A client network addressed more recipients than limits.client_recipients allows; further RCPT commands get 451 4.7.1 until its allowance comes back (`retry_after_secs`). Logged once per network and window.",
        "None for a spam run or a dictionary attack; the client retries later. For a legitimate bulk sender, raise limits.client_recipients or exempt it through relay.networks.");
    // Inbound verification (issue 18 §1, §2: tern-authcheck, docs/FILTERING.md).
    VERIFY_VERDICT = (2151, "verify.verdict", Info,
        "Inbound verification judged a message: `spf`, `dkim`, `dmarc`, `arc` give each method's result (`-` when off), `action` what was done (accept, quarantine, reject, defer) and `reason` why; `removed` counts earlier Authentication-Results fields claiming Tern's authserv-id that were removed. Written for refused messages too (their queue id was never acknowledged).",
        "None; `tern track <id>` shows it. Many DMARC failures from one source may be a forwarder to list in verify.trusted_forwarders.", track = "verified");
    VERIFY_REFUSED = (2152, "verify.refused", Notice,
        "A message was refused at the end of DATA by inbound verification: DMARC reject (550 5.7.1), SPF fail with verify.spf_fail = \"reject\" (550 5.7.23), or a temporary DNS error with verify.temperror = \"defer\" (451); nothing was queued.",
        "None for spoofed mail. If legitimate mail is refused, check the sender's SPF/DKIM/DMARC records, or list the forwarder in verify.trusted_forwarders or the domain in verify.exceptions.");
    VERIFY_NOT_IN_MEMORY = (2153, "verify.not_in_memory", Info,
        "A message was not held in memory for DKIM and ARC verification (`reason`: over verify.max_size, or the process-wide verify.memory_budget was used up); it was streamed to the spool as usual and judged on SPF alone (its DMARC result is pass or none, never fail).",
        "None for an occasional large message. If the budget is the reason, raise verify.memory_budget or lower the number of connections.");
    VERIFY_SETUP_FAILED = (2154, "verify.setup_failed", Error,
        "Inbound verification could not be set up (`error`: the Public Suffix List file, the resolver); at start Tern refuses to run, on reload the previous settings stay in force.",
        "Fix the file or setting named in `error` (`tern check-config` shows it) and reload.");

    // Screening before the first command and greylisting (tern-screen,
    // docs/SCREENING.md): ids 2181-2199. Refusals are logged once per kind, client network
    // and 10 minutes, however many connections or commands they refuse.
    SCREEN_LISTED = (2181, "screen.dnsbl.listed", Notice,
        "A client's DNS list score (`score`, the sum of the weights of the lists in `listed_by`) reached screen.dnsbl_threshold. `action` says what followed: `ignore` (logged only), `enforce` (every RCPT refused 550 5.7.1 naming the list) or `drop` (521 5.7.1 and close). Logged once per client network and 10 minutes.",
        "None for a listed spam source. If a legitimate server is listed, tell its operator (the list's web site says why), and allow it meanwhile with an allow list of negative weight or relay.networks.");
    SCREEN_PREGREET = (2182, "screen.pregreet", Notice,
        "A client sent something (`octets`, the first of them in `sample`) before Tern's final 220 greeting line, as spam robots do to save time. `action` says what followed: `ignore`, `enforce` (every RCPT refused 550 5.5.1) or `drop` (521 5.5.1 and close). Logged once per client network and 10 minutes.",
        "None for a robot. A legitimate client that does this is broken (it does not wait for the greeting, RFC 5321 4.3.1): tell its operator, or add it to relay.networks.");
    SCREEN_GREYLISTED = (2183, "screen.greylist.deferred", Info,
        "A recipient was refused 451 4.7.1 by greylisting: the (client network, sender, recipient) triplet is new (`new` = true) or was retried before screen.greylist_delay (`retry_in_secs` left). Logged once per client network and 10 minutes.",
        "None: a real server retries and passes. If mail from a sender that never retries properly matters, add its network to relay.networks, or to an allow list.");
    SCREEN_GREYLIST_PASSED = (2184, "screen.greylist.passed", Info,
        "A greylisted triplet was retried after screen.greylist_delay and within screen.greylist_window (`after_secs`): the recipient was accepted, and the client network (`network`) is allowed automatically for screen.greylist_expire after its last mail.",
        "None.");
    SCREEN_LIST_UNANSWERED = (2185, "screen.dnsbl.unanswered", Warning,
        "A DNS list (`zone`) did not answer within [dns] timeout_ms, or failed: it counted as not listing the client. Logged once per list and 10 minutes.",
        "Check that the list's zone name is right, that the resolver can reach it, and that the list still serves you (many public lists refuse queries coming through large public resolvers); remove a list that no longer answers.");
    SCREEN_GREYLIST_LOADED = (2186, "screen.greylist.loaded", Info,
        "At start the greylist file (<data_dir>/greylist.json) was read: `triplets` and `networks` kept (entries expired meanwhile are dropped).",
        "None.");
    SCREEN_GREYLIST_CORRUPT = (2187, "screen.greylist.corrupt", Error,
        "The greylist file (`path`) was not valid (`reason`) and was moved aside to `moved_to` (never deleted); greylisting started empty, so senders already passed are greylisted once more. The start goes on.",
        "Look at the moved file if you want to know what damaged it; remove it when done. Nothing else to do.");
    SCREEN_GREYLIST_SAVE_FAILED = (2188, "screen.greylist.save_failed", Error,
        "The greylist could not be written to <data_dir>/greylist.json (`error`); greylisting goes on in memory and the write is tried again at the next save (every minute and at shutdown).",
        "Check the data directory: free space, permissions, a file system gone read-only.");
    SCREEN_ALLOW_LISTED = (2189, "screen.dnsbl.allow_listed", Info,
        "A client's DNS list score was below zero because an allow list (negative weight, `allowed_by`) lists it: it passed the lists whatever the block lists said, and skips greylisting. Logged once per client network and 10 minutes.",
        "None.");
    SPOOL_RECOVERED = (3001, "spool.recovered", Info,
        "The spool was scanned at start; fields count the messages in each state and the partial writes removed. A server that delivers recovers it in the background after its listeners started (this event then comes at the end of that recovery, with event 4065) and reads deferred/ after that: `deferred` is then 0 here and event 4055 counts it.",
        "None.");
    SPOOL_PARTIAL_REMOVED = (3002, "spool.partial.removed", Info,
        "An unfinished write (a message that was never acknowledged) was removed from the spool's tmp directory.",
        "None: the client was never told the message was accepted and will retry.");
    SPOOL_CORRUPT = (3003, "spool.corrupt.quarantined", Error,
        "A spool entry failed validation, or was not what Tern makes there, and was moved (never opened) to the corrupt quarantine with a `.reason` (a message takes its delivery record along, field `record`); the rest of the queue flows. `queue_id` is empty for entries that are not a message's; a damaged segment lists its messages in `damaged_ids` and `written_out_ids`.",
        "Inspect the file named in the event under spool/corrupt and its `.reason`; it is never deleted automatically. For a damaged segment, `tern track <id>` shows each message's fate.", track = "quarantined");
    BACK_PRESSURE_ON = (3004, "spool.back_pressure.on", Warning,
        "The spool disk's free space fell below its threshold or the queue passed its size limit; new mail is refused with 452 4.3.1.",
        "Free disk space or let the queue drain; mail already queued is untouched.");
    BACK_PRESSURE_OFF = (3005, "spool.back_pressure.off", Info,
        "Back pressure ended; new mail is accepted again.",
        "None.");
    SPOOL_IO_ERROR = (3006, "spool.io.error", Error,
        "An I/O error occurred on the spool outside a session.",
        "Check the spool disk.");
    SPOOL_SEGMENT_MESSAGE_DAMAGED = (3007, "spool.segment.message.damaged", Error,
        "A message in a damaged segment could not be recovered: its record frame is intact (so its queue id is known) but its message file fails validation (`reason`); it is kept, byte for byte, only inside the quarantined segment (`moved_to`, at `offset`). One event per message; the segment's own event 3003 and its `.reason` file list them all.",
        "Tell the sender the message was lost (its envelope may still be readable in the quarantined segment at the offset given); check the disk that damaged it.", track = "quarantined");
    SPOOL_SEGMENT_MESSAGE_RECOVERED = (3008, "spool.segment.message.recovered", Notice,
        "A message of a damaged segment was written out as a file of its own into incoming/ (`to`) before the segment was quarantined, and will be delivered as usual: it was reached through the chain of record lengths (`found` = `chain`) or its frame's MAC verifies under the spool key (`found` = `authenticated`), so these are the client's bytes exactly as acknowledged.",
        "None for the message; see event 3003 for the damaged segment.", track = "recovered");
    SPOOL_SEGMENT_MESSAGE_HELD = (3009, "spool.segment.message.held", Warning,
        "A message of a damaged segment was found only by searching past the damage and its frame is not authenticated (a version-1 frame, or the spool key changed), so it could be bytes a client put inside another message's body: it was written out to hold/ (`to`) instead of being queued.",
        "Look at it (`tern queue show <id>`, spool/hold/<id>); release it with `tern queue release <id>` if it is a real message, or delete it.", track = "held");
    SPOOL_RECORD_SET_ASIDE = (3010, "spool.record.set_aside", Error,
        "A message's legacy delivery record entry (spool/records/<id>, where versions before 2026-12 kept records) was not a regular file (a directory, FIFO, symbolic link, socket or device: `kind`); it was moved to the quarantine (`moved_to`, with a `.reason`), and unless the message's own file carries a record frame (then that is its record and it carries on: `held_from` is `none`), since nobody can tell which recipients already have the message, the message was held (`held_from` gives the state it left; `none` when it was held, poisoned or gone already).",
        "Find out who already has the message (the tracking log: `tern track <id>`), then `tern queue release <id>` to send it to every recipient again, or delete it.", track = "held");
    SPOOL_UNKNOWN_ENTRIES = (3011, "spool.entries.unknown", Notice,
        "At start, the spool directory itself holds names Tern does not use (`names`, at most 20, and their `count`). They are left where they are, untouched; everything inside Tern's own subdirectories that Tern did not make is quarantined instead. One event per start.",
        "Move the files out of the spool directory: it is Tern's alone.");
    SPOOL_KEY_CREATED = (3012, "spool.key.created", Info,
        "The spool had no key (a new spool, or the key file was missing), so a new one was generated (spool/spool.key, mode 0600). New segment records are authenticated with it. If the spool already held segments, their records found only by searching past damage now go to hold/.",
        "None for a new spool. On an existing spool, find out who removed the key file.");
    SPOOL_KEY_REPLACED = (3013, "spool.key.replaced", Warning,
        "The spool key file was not usable (`reason`: damaged, not a regular file); it was moved to the quarantine (never deleted) and a new key was generated. Records of older segments still count through the chain of record lengths; those found only by searching past damage go to hold/ for an operator. Delivery-record frames in message files written under the old key no longer count: those messages are retried as if never attempted, and recipients that already had them can get them again.",
        "Check the disk; keep spool/corrupt/spool.key* until the old segments are gone. To keep the delivery records of deferred mail, stop Tern and put the old key back before their next attempt.");

    DELIVERY_DELIVERED = (4001, "delivery.delivered", Info,
        "Recipients of a message were delivered; fields give the next hop, the host and address, TLS, and the reply.",
        "None.", track = "delivered");
    DELIVERY_DEFERRED = (4002, "delivery.deferred", Notice,
        "A message could not be delivered to some recipients for a temporary reason and will be retried; fields give the reason and the next attempt.",
        "None, unless a destination keeps deferring: check it with the reason given.", track = "deferred");
    DELIVERY_FAILED = (4003, "delivery.failed", Notice,
        "Recipients failed permanently (5xx reply, no such domain, null MX, reject route, expired, hop limit); a bounce is sent unless the sender is null or NOTIFY forbids it.",
        "None; the sender is told.", track = "bounced");
    DSN_QUEUED = (4004, "delivery.dsn.queued", Info,
        "A delivery status notification (bounce, delay notice or success report) was queued; fields give its queue id and the original's.",
        "None.", track = "dsn");
    DSN_SUPPRESSED = (4005, "delivery.dsn.suppressed", Notice,
        "A failure was not reported because the original had the null sender (no bounce loops) or NOTIFY=NEVER.",
        "None; the failure is in this event.", track = "dsn");
    DESTINATION_DOWN = (4006, "delivery.destination.down", Warning,
        "Every host of a destination failed to connect or greet; messages for it wait until its retry time without new attempts. Other destinations are not affected.",
        "Check the destination's hosts (the last error is in the event).");
    DELIVERY_DEFERRED_8BIT = (4007, "delivery.deferred.8bit", Warning,
        "An 8-bit message was not sent because the next hop does not offer 8BITMIME and the message cannot be converted to 7 bit without changing it; `reason` says why (an 8-bit address, which needs SMTPUTF8; 8-bit octets in a structured field such as Message-ID or Received; nesting or part count past the limits; an unknown encoding). It stays queued (never sent broken), is retried, and bounces when it expires.",
        "Route the destination through a relay that offers 8BITMIME, or have the sender fix the message (docs/CONVERSION.md lists what converts).", track = "attempt");
    QUEUE_MESSAGE_EXPIRED = (4008, "queue.message.expired", Notice,
        "A message reached the maximum queue lifetime; its undelivered recipients are bounced.",
        "None.", track = "expired");
    QUEUE_HELD = (4009, "queue.message.held", Info,
        "A message was moved to the hold queue by a hold route; it is not scheduled until released.",
        "Release it when it should go (admin tools), or change the route.", track = "held");
    QUEUE_ERROR = (4010, "queue.error", Error,
        "The queue could not move, read or record a message (a spool error); the message stays where it is and is retried later.",
        "Check the spool disk.");
    QUEUE_CRASH_COUNTED = (4011, "queue.message.crash_counted", Warning,
        "At start, the evidence about how the previous run died points at this message (`evidence`: `last_gasp`, a fatal signal on a thread processing it; `probe`, its probe was running; `alone`, it was the only message in process), so one crash is counted in its delivery record (`crashes` of `threshold`) before it is touched again. It waits at the back of the suspect line for its next probe.",
        "None for a single crash; if one message keeps appearing, see event 4012.", track = "crashed");
    QUEUE_POISONED = (4012, "queue.message.poisoned", Error,
        "The crashes counted against a message (deaths of the process the evidence attributed to it, event 4011, and panics of its processing, event 4013) reached the poison threshold, so it was moved to the poison queue; it is never retried automatically. The rest of the queue flows.",
        "Inspect it with `tern queue list --state poison` and spool/poison/<id>; then `tern queue release <id>` to try it again or `tern queue delete <id>`.", track = "poisoned");
    QUEUE_INTERNAL_FAILURE = (4013, "queue.message.internal_failure", Error,
        "Processing a message failed inside Tern: its task panicked, or the delivery worker carrying it ended without a result (a panic, or the watchdog stopped it). Every slot it held was released; the failure counts against the message like a crash, and the message is deferred (or poisoned at the threshold, event 4012).",
        "Report it with the stage and error fields: it is a bug in Tern or in a library it uses. The rest of the queue is not affected.", track = "crashed");
    QUEUE_RELEASED = (4014, "queue.message.released", Info,
        "An administrator released a message from the poison or hold queue (`tern queue release`); its crash count was reset and it is tried again now.",
        "None.", track = "released");
    QUEUE_AFTER_CRASH = (4015, "queue.start.after_crash", Warning,
        "The previous run of Tern ended without a clean stop (killed, crashed, out of memory, power lost). `evidence` says what points at a message: `last_gasp` (a fatal signal, `signal`, on a thread processing it), `probe` (its probe was running), `alone` (the only message in process), or `none`; `counted` lists the messages a crash was counted against (event 4011 each); `in_process` counts the messages that were in process; `suspects` counts the messages waiting to be probed one at a time, `probe_in_secs` from now (queue.probe_delay_secs). Suspects stay in active/ meanwhile; the rest of the queue flows. `note` says why the evidence could not be read, if it could not.",
        "None for a single event. If it repeats, find why Tern dies: the kernel log (the OOM killer), core dumps, the last lines Tern wrote to stderr (a fatal signal is reported there); event 4012 names a message that keeps killing it.");
    QUEUE_PROBE_STARTED = (4016, "queue.probe.started", Info,
        "A suspect (a message that was in process when Tern died) is being probed: its probe mark is on disk, then it is processed alone among the suspects while other mail flows. If Tern dies before the probe ends, the next start counts the crash against it (event 4011, evidence `probe`). `waiting` counts the suspects behind it.",
        "None.");
    QUEUE_PROBE_PASSED = (4017, "queue.probe.passed", Info,
        "A suspect's probe ended without Tern dying: the message is no longer a suspect (`outcome`: `done` if it left the queue or was held, `deferred` if it waits for a retry like any message), after `ms` milliseconds.",
        "None.");
    QUEUE_PROBE_UNAVAILABLE = (4018, "queue.probe.unavailable", Error,
        "A crash-evidence file in the spool could not be written (`file`: `probe`, the probe journal, or `last-gasp`; `error`). Without the probe journal, suspects are not probed in this run (they wait in active/ for a later start) and the next start after a crash counts nothing; without the last-gasp record, a fatal signal is attributed by the probe mark and the other rules only.",
        "Check the spool disk (space, errors in the kernel log), then restart Tern when it is fixed.");
    DELIVERY_CONNECTION_REUSED = (4025, "delivery.connection.reused", Debug,
        "A delivery took an idle connection from the connection cache instead of connecting: the connection leads to the same address, port and TLS policy (and, under `verify`, the same certificate name) as the job's MX host, whatever next hop opened it. Fields give the next hop, the host, the endpoint, the transactions the connection carried so far and its age.",
        "None.");
    DELIVERY_CONNECTION_CACHE_FULL = (4026, "delivery.connection.cache_full", Info,
        "The connection cache was full (`delivery.connection_cache_size` idle connections) when a worker handed in another one, so the connection idle longest was closed to make room; fields give its endpoint and host.",
        "None if it is occasional. If it is frequent while mail flows to many hosts, raise `delivery.connection_cache_size` so connections are reused instead of opened again.");
    DELIVERY_CONNECTION_IDLE_CLOSED = (4027, "delivery.connection.idle_closed", Debug,
        "An idle connection waited in the connection cache for `delivery.connection_cache_idle_secs` without a job to its endpoint and was closed (QUIT).",
        "None.");
    DELIVERY_LOOP_SELF = (4035, "delivery.loop.self", Warning,
        "Mail for a destination would have gone to this server itself, and was not sent: the domain's best MX host is this server (`how` = `address`: its host name or an address where a listener accepts at the MX port, every address of the machine and 127.0.0.0/8 behind a wildcard listener such as 0.0.0.0:25), or a host greeted with this process's own banner mark (`how` = `greeting`: an address the check cannot know, behind NAT, a port forward or a proxy). Hosts of the same or a worse preference are not tried (RFC 5321 §5.1); the recipients are deferred with 4.4.6 and kept, never relayed to ourselves and never bounced for it (they bounce only when they expire). As a backup MX Tern waits for the better hosts. Fields: queue_id, next_hop, host, how, reason.",
        "If this server should take the domain's mail, route the domain to a local transport (maildir, lmtp); otherwise correct the domain's MX records or the route's relay host. As a backup MX this is expected while the better hosts are down.", track = "attempt");

    QUEUE_BACKLOG_LOADED = (4055, "queue.backlog.loaded", Notice,
        "The deferred mail on disk at the start was read in the background (the listeners answered meanwhile; it was scheduled before, event 4067): `deferred` messages were read and validated, their next hops known; `damaged` files failed validation when read (a file a retry was writing at that moment counts too) and were handed to the queue at once, whose message task validates each again and quarantines it (event 3003) if it is really damaged; `quarantined` entries of deferred/ and records/ that were not messages (a name Tern does not make, something that is not a file, a bad record) were quarantined (event 3003 each), `orphan_records_removed` records had no message, `secs` since the queue started. `stopped` is true when Tern stopped before the end (the rest is read at the next start).",
        "None.");
    QUEUE_BACKLOG_FAILED = (4056, "queue.backlog.failed", Error,
        "Reading the deferred mail at start failed on a system error (`error`), after `deferred` messages were scheduled; the rest waits in deferred/, untouched, and is read at the next start. New mail still flows.",
        "Check the spool disk (space, errors in the kernel log, permissions), then restart Tern.");
    QUEUE_RECOVERY_FINISHED = (4065, "queue.recovery.finished", Notice,
        "The spool's recovery after the start ended in the background (the listeners answered meanwhile and new mail flowed): the files of incoming/, active/, hold/ and poison/ were validated in full and the segments there at the start recovered (a torn tail cut, damaged ones quarantined). Fields: the valid messages per state (`incoming` includes those resident in segments), `quarantined` entries (event 3003 each), `partials_removed` unfinished writes, `scheduled` messages of incoming/ handed to the queue, `secs` it took. Event 3001 carries the same counts. `stopped` is true when Tern stopped before the end (the rest is recovered at the next start). The deferred backlog is read next (event 4055).",
        "None.");
    QUEUE_RECOVERY_FAILED = (4066, "queue.recovery.failed", Error,
        "The spool's recovery after the start failed in the background on a system error (`error`) after `secs`. New mail still flows; the messages that were on disk at the start wait there, untouched (none is lost), until the next start: they are not delivered, administrators' actions on them are refused, the deferred backlog is not loaded.",
        "Check the spool disk (space, errors in the kernel log, permissions), then restart Tern.");
    QUEUE_BACKLOG_SCHEDULED = (4067, "queue.backlog.scheduled", Notice,
        "Every deferred message on disk at the start has a retry timer, from its name and its file's modification time (the due time Tern keeps there too), before any file was read: `deferred` messages, `secs` since the queue started. The files are read next, in the background, for their next hops and to validate them (event 4055); until then `tern queue summary` counts the messages not read yet apart, and a destination's retry reaches each of them as soon as its file is read.",
        "None.");
    // DKIM signing (tern-dkim; docs/DKIM.md), 4101-4119.
    DKIM_KEY_LOADED = (4101, "dkim.key.loaded", Info,
        "A DKIM signing key was loaded at the start or a reload: fields give the signing `domain`, `selector`, `algorithm`, `bits` and `file`.",
        "None.");
    DKIM_KEY_FAILED = (4102, "dkim.key.failed", Error,
        "A DKIM signing key could not be loaded (`error` says why: missing file, a symbolic link, not a regular file, mode other than 0600/0400, owner other than Tern's user, a directory others can write, not a PEM key of the configured algorithm, an RSA key under 2048 bits). At a reload, `kept_previous` = true means the key loaded before under the same domain, selector and algorithm keeps signing; false means this key does not sign (a domain left without keys signs nothing, and its mail goes unsigned). A start with a key that fails does not happen: the start stops (and `tern check-config` reports it).",
        "Fix the file named in the event (`chmod 600`, `chown` to Tern's user, the right key), then reload.");
    DKIM_SIGNED = (4103, "dkim.signed", Debug,
        "A message was signed for one delivery attempt: `domain` (d=), `selectors`, `size` of the content signed. Signing happens per attempt, after any 7-bit conversion.",
        "None.");
    DKIM_SIGN_DEFERRED = (4104, "dkim.sign.deferred", Warning,
        "A message that should have been signed could not be (`error`: the header section is over 1 MiB, the signer failed) and dkim.on_failure = \"defer\": its recipients for this next hop were deferred with 4.7.0 and it is retried after the backoff; it bounces when it expires if signing keeps failing.",
        "Look at `error`; if the key is the cause fix it and reload. To send such mail unsigned instead, set dkim.on_failure = \"unsigned\".", track = "attempt");
    DKIM_SIGN_SKIPPED = (4105, "dkim.sign.unsigned", Warning,
        "A message that should have been signed could not be (`error`) and dkim.on_failure = \"unsigned\": it was sent without a signature.",
        "Look at `error`; receivers may junk or refuse the unsigned message (DMARC).", track = "attempt");
    // ARC sealing of forwarded mail (tern-dkim `arc`, tern-queue `sealing.rs`;
    // docs/DKIM.md "ARC sealing"), 4111-4119.
    ARC_KEY_LOADED = (4111, "arc.key.loaded", Info,
        "The [arc] sealing key was loaded (at the start or a reload); fields give the domain, selector, key size and file.",
        "None. Check that `<selector>._domainkey.<domain>` publishes its public key (`tern dkim check` works for a [dkim] domain; for ARC compare the record by hand).");
    ARC_KEY_FAILED = (4112, "arc.key.failed", Error,
        "The [arc] sealing key could not be loaded (`error`: missing file, a symbolic link, mode other than 0600/0400, owner other than Tern's user, a directory others can write, not an RSA PEM key, under 2048 bits). At a reload, `kept_previous` = true means the key loaded before keeps sealing; false means forwarded mail goes unsealed (event 4114, reason no_key). A start with a key that fails does not happen: the start stops.",
        "Fix the file named in the event, then reload.");
    ARC_SEALED = (4113, "arc.sealed", Info,
        "A forwarded message was ARC-sealed for this attempt: `instance` is the new set's i=, `cv` the chain status it records (none for the first set, pass, or fail), `results` where its ARC-Authentication-Results came from (verifier: Tern's inbound Authentication-Results; minimal: a first set written while verification is off; validated: Tern validated the chain at delivery).",
        "None.");
    ARC_UNSEALED = (4114, "arc.unsealed", Warning,
        "A message that should have been ARC-sealed was sent without a seal; `reason`: too_large (over arc.max_size), chain_failed (the last set already says cv=fail: RFC 8617 forbids sealing after it), chain_too_long (50 sets already), chain_malformed (ARC fields that cannot be numbered into sets), temperror (the chain could not be validated within arc.timeout_secs: DNS), no_key (no usable key), error (the sealer failed or the content could not be read: `error`). The message itself is delivered as it would be without ARC. Rate-limited per reason.",
        "temperror: check the DNS servers in [dns]. no_key: fix the key (event 4112). too_large: raise arc.max_size if such mail must be sealed. The chain reasons need no action: the next hop sees the same chain.", track = "attempt");
    // DMARC aggregate reports (tern-reports; docs/REPORTS.md), 4121-4139.
    DMARC_REPORTS_STARTED = (4121, "dmarc.reports.started", Info,
        "DMARC aggregate reports are on: the store in `dir` was read back (`journals` periods, `messages` counted) and the report task runs; `next` is when the open period ends (Unix time).",
        "None.");
    DMARC_REPORT_QUEUED = (4122, "dmarc.report.queued", Info,
        "A DMARC aggregate report was queued as a new message (`queue_id`) for `domain`, period `begin` to `end`, to `rua`; `rows`, `messages` and `size` (the gzipped file) describe it. It is delivered, retried and bounced like any message.",
        "None. A report that keeps bouncing means the domain's `rua` address is broken: nothing to do on Tern's side.");
    DMARC_REPORT_SKIPPED = (4123, "dmarc.report.skipped", Notice,
        "A `rua` URI of `domain` was not used: `reason` is `not mailto` (https: and other schemes are not defined by RFC 7489), `not a usable address`, `size limit` (the gzipped report is larger than the URI's `!size`), or `more than max_rua`.",
        "None; it is the domain owner's record. Raise `dmarc_reports.max_rua` to use more addresses.");
    DMARC_REPORT_UNAUTHORIZED = (4124, "dmarc.report.unauthorized", Notice,
        "A `rua` address outside `domain` was not sent a report: `<domain>._report._dmarc.<rua domain>` has no TXT record starting `v=DMARC1` (RFC 7489 §7.1, external destination verification). This protects third parties from reports they did not ask for.",
        "None; the owner of the report address must publish that record.");
    DMARC_REPORT_LOOKUP_FAILED = (4125, "dmarc.report.lookup.failed", Warning,
        "The external destination check of a `rua` address failed (`error`: timeout, SERVFAIL, ...) within `dmarc_reports.dns_timeout_secs`; no report went to that address for this period.",
        "Check the `[dns]` servers if it is frequent; a single failure costs one day of reports to one address.");
    DMARC_REPORT_FAILED = (4126, "dmarc.report.failed", Error,
        "A report for `domain` could not be built or queued (`error`, e.g. the spool refused it); the period stays in the store and the report is tried again at the next run (`retry_secs`).",
        "Look at `error` and at the spool's events (disk space, back pressure).");
    DMARC_OBSERVATIONS_DROPPED = (4127, "dmarc.observations.dropped", Warning,
        "DMARC observations were dropped because the writer's queue was full (`dropped` since the last such event; `dmarc_reports.max_pending`): those messages are missing from the reports. Mail is not affected.",
        "If it repeats, the disk under the data directory is slow; raise `dmarc_reports.max_pending`.");
    DMARC_OBSERVATIONS_CAPPED = (4128, "dmarc.observations.capped", Warning,
        "Observations were not kept because the open period reached `dmarc_reports.max_domains` (`domains_dropped` messages of new policy domains) or `dmarc_reports.max_rows` (`rows_dropped` messages needing a new row; their domain's report states the number in `<error>`). Counts since the last such event.",
        "Raise the cap if memory allows (each row is a few hundred octets), or shorten `interval`.");
    DMARC_STORE_FAILED = (4129, "dmarc.store.failed", Error,
        "Writing or syncing the report journal failed (`error`): the data stays in memory and is written at the next flush; a crash before then loses it.",
        "Check the disk under the data directory (space, permissions, errors).");
    DMARC_STORE_QUARANTINED = (4130, "dmarc.store.quarantined", Warning,
        "A file in the report directory was moved (or, for a journal with a damaged line, copied) to `dmarc-reports/corrupt/` with a `.reason`: `reason` says why (damaged line, not a regular file, a name Tern does not give). The good lines of a journal are kept; the start goes on.",
        "Look at the file and its `.reason`; delete it when done. Nothing else in the report directory should be written by anyone but Tern.");
    DMARC_STORE_UNUSABLE = (4131, "dmarc.store.unusable", Error,
        "The report directory cannot be used (`error`: a link, another user's directory, an I/O error), so DMARC aggregate reports are off until the next start: no observation is kept. Mail is not affected.",
        "Fix the directory `dir` (it must be a real directory owned by Tern's user), then restart Tern.");
    DMARC_PERIOD_GIVEN_UP = (4132, "dmarc.period.given_up", Error,
        "More than 7 closed periods were waiting for their reports (reports could not be queued for a week): the oldest were dropped (`periods`).",
        "Look for event 4126 and fix what stops reports from being queued.");
    DMARC_REPORTS_RUN = (4133, "dmarc.reports.run", Info,
        "A report run ended (`trigger`: `schedule`, `start` or `admin`): `periods` closed periods looked at, `queued` messages queued, `skipped` addresses skipped, `failed` reports to try again, `waiting` periods waiting on the other nodes of a cluster (docs/cluster/state.md).",
        "None.");
    // Outbound TLS policy (DANE, MTA-STS, TLS-RPT; docs/TLS.md): 4141-4149 DANE,
    // 4151-4159 MTA-STS, 4161-4175 TLS reports, 4181-4189 the policy decision.
    DANE_DNSSEC_BOGUS = (4141, "dane.dnssec.bogus", Warning,
        "A DNSSEC-validated lookup for a destination routed with `tls = \"dane\"` or `\"dane-only\"` did not validate (bogus: signatures that fail, a DS matching no key) or could not be validated (SERVFAIL, timeout): `lookup` is `mx`, `address` or `tlsa`, `host` the MX host (the domain for `mx`), `reason` what the resolver said. The hosts concerned are not tried and the mail is deferred (4.7.5, event 4181), never sent unauthenticated (RFC 7672 §2.1.1). Rate-limited per domain.",
        "Check the destination's DNSSEC (e.g. `delv` or https://dnsviz.net); if the destination's zone is broken, tell its administrator. If every DANE destination shows it, check `[dane] trust_anchor` and that the `[dns]` (or `[dane] nameservers`) servers pass DNSSEC records (a resolver that strips RRSIGs makes every signed answer fail).");
    DANE_IN_FORCE = (4142, "dane.tlsa.in_force", Info,
        "DANE applies to an MX host: its MX, address and TLSA records are DNSSEC-secure and `records` of the `published` TLSA records are usable (DANE-TA or DANE-EE); connections to it require TLS with a certificate matching them. Emitted the first time a host is seen with DANE and when its records change (a bounded memory per host).",
        "None. When a host's records change unexpectedly, compare them with what its administrator publishes.");
    MTA_STS_POLICY_FETCHED = (4151, "mta_sts.policy.fetched", Info,
        "A destination domain's MTA-STS policy (RFC 8461) was fetched from https://mta-sts.<domain>/.well-known/mta-sts.txt and cached (first use, a new `id` in its `_mta-sts` TXT record, or the cached one expired). Fields: domain, policy_id (the TXT id), mode (enforce, testing, none), max_age (seconds), mx (the patterns). Under `enforce` only matching MX hosts with a valid certificate get its mail.",
        "None.");
    MTA_STS_FETCH_FAILED = (4152, "mta_sts.policy.fetch_failed", Warning,
        "A domain announces an MTA-STS policy (`_mta-sts` TXT) but it could not be fetched or is invalid. Fields: domain, policy_id, result (the TLS-RPT type: sts-policy-fetch-error, sts-policy-invalid, sts-webpki-invalid), reason, fallback (the cached policy's id still in force, or `none`: mail goes out as the route's `tls` says). Not tried again for mta_sts.retry_failed_secs, so logged at most once per domain per that interval.",
        "If fallback is `none`, the domain's mail is not protected by its policy until the fetch works; tell the domain's administrator if it lasts (their TLS report says so too). Check that Tern reaches mta-sts.<domain> on port 443 (DNS, firewall, proxy).");
    MTA_STS_CACHE_QUARANTINED = (4153, "mta_sts.cache.quarantined", Warning,
        "A file of the MTA-STS policy cache (<data_dir>/mta-sts/) failed its checks at start (not a cache file, a link, a domain that does not match its name, a policy that does not parse) and was moved aside (`moved_to`) instead of being used. Fields: path, reason, moved_to.",
        "None needed: the policy is fetched again on the next mail to its domain. Look at the file if it keeps happening (a disk problem, or something else writing there).");
    MTA_STS_CACHE_LOADED = (4154, "mta_sts.cache.loaded", Info,
        "The MTA-STS policy cache was read back at start. Fields: dir, entries (valid policies kept), expired (deleted), quarantined (moved aside, event 4153).",
        "None.");
    MTA_STS_CACHE_FAILED = (4155, "mta_sts.cache.failed", Warning,
        "The MTA-STS policy cache directory could not be used (it is not a directory Tern owns alone, or it cannot be created or read), or a policy could not be written to it. Fields: dir, domain (when writing), error. Policies are still cached in memory, but a restart forgets them.",
        "Fix the directory's owner and mode (0700, Tern's user), or the disk.");
    // TLS reports (RFC 8460; tern-reports; docs/TLS.md "TLS reporting"), 4161-4175.
    TLSRPT_STARTED = (4161, "tlsrpt.started", Info,
        "SMTP TLS reporting is on: the store in `dir` was read back (`journals` periods, `sessions` counted), delivery workers record each reported session's TLS outcome, and `sending` says whether reports are sent (`tls_reports.enabled`); `next` is when the open period ends (Unix time).",
        "None.");
    TLSRPT_REPORT_QUEUED = (4162, "tlsrpt.report.queued", Info,
        "A TLS report for `domain` (period `begin` to `end`, `report_id`) was queued as a new message (`queue_id`) to the `mailto:` address `rua`; `policies`, `successes`, `failures` and `size` (the gzipped JSON) describe it. It is delivered, retried and bounced like any message.",
        "None. A report that keeps bouncing means the domain's `rua` address is broken: nothing to do on Tern's side.");
    TLSRPT_REPORT_POSTED = (4163, "tlsrpt.report.posted", Info,
        "A TLS report for `domain` (period `begin` to `end`, `report_id`) was POSTed to the `https:` address `rua` and accepted (`status`, a 2xx).",
        "None.");
    TLSRPT_REPORT_SKIPPED = (4164, "tlsrpt.report.skipped", Notice,
        "A `rua` URI of `domain`'s `_smtp._tls` record was not used: `reason` is `unsupported scheme`, `not a usable address`, `https off` (no HTTPS client in this build or configuration), or `more than max_rua`.",
        "None; it is the domain owner's record. Raise `tls_reports.max_rua` to use more addresses.");
    TLSRPT_REPORT_NO_RECORD = (4165, "tlsrpt.report.no_record", Notice,
        "No report was sent for `domain`: its `_smtp._tls` TXT lookup found no usable `v=TLSRPTv1` record (`reason`: none published, several published, syntax), or failed (`reason`: `lookup failed: ...`, then the report is tried again at the next run). A domain without a record asked for no report; its data for the period is dropped.",
        "None for a domain without a record. If lookups fail, check the `[dns]` servers.");
    TLSRPT_REPORT_FAILED = (4166, "tlsrpt.report.failed", Error,
        "A TLS report for `domain` could not be delivered to any of its addresses (`error`: the spool refused the message, the HTTPS receiver answered an error or timed out); the period stays in the store and the report is tried again at the next run (`retry_secs`), for 7 days at most.",
        "Look at `error`: for the spool, its events (disk space, back pressure); for an https address, tell the domain's administrator if it persists.");
    TLSRPT_OBSERVATIONS_DROPPED = (4167, "tlsrpt.observations.dropped", Warning,
        "TLS session observations were dropped because the writer's queue was full (`dropped` since the last such event; `tls_reports.max_pending`): those sessions are missing from the reports. Mail is not affected.",
        "If it repeats, the disk under the data directory is slow; raise `tls_reports.max_pending`.");
    TLSRPT_OBSERVATIONS_CAPPED = (4168, "tlsrpt.observations.capped", Warning,
        "TLS session observations were not kept because the open period reached `tls_reports.max_domains` (`domains_dropped` sessions of new policy domains), `tls_reports.max_rows`, or 16 policies for one domain (`rows_dropped` sessions needing a new row or policy: they are missing from the report). Counts since the last such event.",
        "Raise the cap if memory allows, or shorten `interval`.");
    TLSRPT_STORE_FAILED = (4169, "tlsrpt.store.failed", Error,
        "Writing or syncing the TLS report journal failed (`error`): the data stays in memory and is written at the next flush; a crash before then loses it.",
        "Check the disk under the data directory (space, permissions, errors).");
    TLSRPT_STORE_QUARANTINED = (4170, "tlsrpt.store.quarantined", Warning,
        "A file in the TLS report directory was moved (or, for a journal with a damaged line, copied) to `tls-reports/corrupt/` with a `.reason`: `reason` says why. The good lines of a journal are kept; the start goes on.",
        "Look at the file and its `.reason`; delete it when done. Nothing else in the directory should be written by anyone but Tern.");
    TLSRPT_STORE_UNUSABLE = (4171, "tlsrpt.store.unusable", Error,
        "The TLS report directory cannot be used (`error`: a link, another user's directory, an I/O error), so TLS reporting is off until the next start. Mail is not affected.",
        "Fix the directory `dir` (a real directory owned by Tern's user), then restart Tern.");
    TLSRPT_PERIOD_GIVEN_UP = (4172, "tlsrpt.period.given_up", Error,
        "More than 7 closed periods were waiting for their TLS reports (reports could not be sent for a week): the oldest were dropped (`periods`).",
        "Look for event 4166 and fix what stops reports from being sent.");
    TLSRPT_RUN = (4173, "tlsrpt.run", Info,
        "A TLS report run ended (`trigger`: `schedule`, `start` or `admin`): `periods` closed periods looked at, `domains` reported, `queued` messages queued, `posted` reports POSTed, `skipped` addresses skipped, `failed` reports to try again, `waiting` periods waiting on the other nodes of a cluster (docs/cluster/state.md).",
        "None.");
    TLS_INBOUND_HANDSHAKE_FAILED = (4174, "smtpd.tls.inbound_failed", Notice,
        "A client's STARTTLS handshake with one of Tern's listeners failed (`tls_reports.inbound_events`): `client`, `listener`, `reason` (the TLS error). Rate-limited: one event per client network (/24, /64) a minute. Sending servers that fail here may deliver in the clear or not at all.",
        "If one sender fails often, compare `reason` with Tern's certificate and `[tls]` settings (protocol versions, an expired or incomplete chain).");
    TLS_INBOUND_CLEARTEXT = (4175, "smtpd.tls.inbound_cleartext", Notice,
        "A client sent mail without TLS on a listener that offers STARTTLS (`tls_reports.inbound_events`): `client`, `listener`, `reason` (`STARTTLS not used`). Rate-limited: one event per client network (/24, /64) a minute.",
        "None usually (many senders are opportunistic); a known partner appearing here may have a TLS problem or a downgrade on the path.");
    DELIVERY_TLS_POLICY_REFUSED = (4181, "delivery.tls.refused", Warning,
        "A host of a destination was not used because TLS could not be had as the policy in force requires (`reason` names it: DANE with a bogus DNSSEC answer or no matching TLSA record, `dane-only` without usable TLSA records, an MX host outside the domain's MTA-STS policy in `enforce`, STARTTLS missing or a certificate that failed `verify`/MTA-STS checks). The next host is tried; when none is left the recipients are deferred (4.7.5), never sent in the clear or to an unauthenticated host. Fields: queue_id, next_hop, domain, host, reason.",
        "If the destination's DNSSEC or MTA-STS publication is broken, tell its administrator (the TLS report does too); to send anyway, route the domain with an explicit `tls` (`may`) for the time being.", track = "attempt");
    DELIVERY_TLS_POLICY = (4182, "delivery.tls.policy", Debug,
        "The host that took a job was held to a TLS policy other than the route's own: `policy` = `dane` (its DNSSEC-validated TLSA records matched the certificate), `mta-sts` (the domain's MTA-STS policy in enforce: the host is listed and its certificate verified) or `mta-sts-testing` (the policy in testing: TLS as the route says, the certificate audited for the report); `reason` says more. Always in the tracking log (step `attempt`), so `tern track` shows which policy each delivery was made under. Fields: queue_id, next_hop, host, policy, reason.",
        "None.", track = "attempt");
    WATCHDOG_STALLED = (5001, "watchdog.worker.stalled", Error,
        "A worker (listener, queue manager, delivery worker, spool writer, DNS) has work waiting but made no progress for longer than watchdog.stall_after_secs (or the timeout of the network step it waits on); fields name it and say what the watchdog does. Logged once per stall; `tern status` shows it.",
        "A delivery worker is restarted (event 5002); for the others, look for what blocks them (disk for a spool writer, the DNS servers, a runtime thread stuck in a lock) and restart Tern if the stall does not end (event 5003).");
    WATCHDOG_RESTARTED = (5002, "watchdog.worker.restarted", Warning,
        "The watchdog restarted a stalled worker: a delivery worker's task is aborted, its connection closed and its concurrency slot freed; its message is deferred and retried after the usual backoff. Other mail flows again.",
        "None if it is rare; if one destination keeps causing it, check that destination and report the stall (the fields of event 5001).");
    WATCHDOG_RECOVERED = (5003, "watchdog.worker.recovered", Info,
        "A stalled worker made progress again (`how` = progress) or is gone (`how` = ended, for example after a restart); `stalled_ms` says how long the stall lasted.",
        "None.");
    WATCHDOG_STATUS_FAILED = (5004, "watchdog.status.failed", Warning,
        "The watchdog could not write its status snapshot (status.json in the data directory); `tern status` shows the last one as stale. Logged once until a write succeeds.",
        "Check the data directory (space, permissions).");

    LOCAL_RECIPIENT_UNKNOWN = (6001, "local.recipient.unknown", Notice,
        "A recipient in a local domain was refused at RCPT with 550 5.1.1: it has no alias, no mailbox and its domain no catch-all. Nothing was accepted, so nothing bounces.",
        "None, unless the address should exist: add it to the mailbox or alias map and reload.");
    LOCAL_ALIAS_REFUSED = (6002, "local.alias.refused", Warning,
        "A recipient was refused at RCPT because its alias expansion failed: a loop (5.4.6, the path is in the event), nesting deeper than 20 (5.4.6), more than 1000 final recipients (5.5.3), or a member without a mailbox (5.1.1).",
        "Fix the alias map (the event names the alias and the member) and reload.");
    LOCAL_MAILDIR_DELIVERED = (6003, "local.maildir.delivered", Info,
        "A message was written and synced into a Maildir's new/ directory; fields give the recipient, how many recipients share this mailbox, the Maildir and the file name.",
        "None.", track = "delivered");
    LOCAL_MAILDIR_FAILED = (6004, "local.maildir.failed", Warning,
        "A Maildir delivery failed with an I/O error (permissions, disk full, a file where a directory should be); the recipient is deferred and retried, and nothing was left in new/.",
        "Fix the cause named in the error (ownership and mode of the mailbox directories, disk space).");
    LOCAL_QUOTA_EXCEEDED = (6005, "local.quota.exceeded", Notice,
        "A message did not fit in a mailbox's quota; it is deferred (4.2.2) or bounced (5.2.2) as local.quota_exceeded says.",
        "None; the mailbox owner must make room, or raise the quota (quota= in the mailbox map, or local.quota_bytes).");
    LOCAL_MAILBOX_MISSING = (6006, "local.mailbox.missing", Warning,
        "A recipient accepted for a local domain has no mailbox at delivery time (the maps were changed since the message was accepted); it fails with 5.1.1 and is bounced.",
        "If the address should still exist, restore its mailbox map entry and reload.");
    LOCAL_MAPS_LOADED = (6007, "local.maps.loaded", Info,
        "The local domains, mailbox map and alias map were loaded (at start or on reload); fields count domains, mailboxes and aliases.",
        "None.");
    LOCAL_MAILDIR_UNSAFE = (6008, "local.maildir.unsafe", Error,
        "A Maildir delivery was refused before anything was written because the mailbox path is unsafe: a symbolic link that root or Tern did not make (or one in a directory others may write), a Maildir, tmp, new or cur directory writable by everyone or owned by a user who is neither Tern nor the Maildir's owner, or a path through one of Tern's own directories (pickup, spool). Fields name the mailbox, the offending component and why. The recipient is deferred (451 4.3.0) and stays queued.",
        "Look at the component named: if the mailbox owner made the link or changed the modes, it may be an attack (the owner redirecting Tern's writes); restore a plain Maildir owned by its user (mode 0700) or fix the mailbox map. The message is delivered at the next retry once the path is safe.");
    LOCAL_MAILBOX_CREATION_DEFERRED = (6009, "local.maildir.creation_deferred", Notice,
        "A message would create more new Maildirs than local.max_new_mailboxes_per_message allows; the recipients whose Maildir does not exist yet beyond that limit are deferred (452 4.5.3) and get their Maildir at a later attempt. Fields give the queue id, the recipient, the Maildir and the limit.",
        "None if the mail is legitimate (the mailboxes are created over the next retries; raise the limit for large first deliveries). Many of these from one sender to a catch-all domain are someone probing or filling the disk with mailboxes: refuse that sender, or replace the catch-all by a mailbox map.");
    PICKUP_DIR_MODE_FIXED = (6010, "pickup.dir.mode_fixed", Warning,
        "A directory of the pickup service (the pickup directory, .claimed or badmail) is Tern's, but its mode was looser than required (older Tern versions created .claimed and badmail with the umask, 0755); Tern set it (fields: the directory, the old and the new mode) and goes on.",
        "None; if the mode was set on purpose, see docs/CONNECTORS.md for the modes Tern accepts.");
    PICKUP_QUEUED = (6021, "pickup.queued", Info,
        "A file from the pickup directory (another system's drop, or `tern sendmail`) was queued durably and then removed; fields give the file, its format (`headers` or `envelope`), the queue id, the sender and the number of recipients.",
        "None.", track = "received");
    PICKUP_BADMAIL = (6022, "pickup.badmail", Warning,
        "A file in the pickup directory could not be used (too big, not a message, no recipients, bad envelope file, not a regular file, no envelope for a `.eml`); it was moved to the badmail directory with a `.reason` file beside it and is never retried. The files behind it flow on.",
        "Read `<pickup>/badmail/<name>.reason`; fix the system that wrote it, or repair the file and drop it into the pickup directory again.");
    PICKUP_DEFERRED = (6023, "pickup.deferred", Warning,
        "A pickup file could not be queued for a temporary reason (a spool error, or back pressure); it stays in the pickup directory and is tried again at a later scan.",
        "See the error field; for back pressure see event 3004, for spool errors check the spool disk.");
    PICKUP_ERROR = (6024, "pickup.error", Error,
        "The pickup directory could not be read or changed (missing, permissions, I/O error); the files in it wait.",
        "Check the directory named in the event (pickup.dir) and its permissions.");
    PICKUP_RECOVERED = (6025, "pickup.recovered", Notice,
        "Files claimed by a Tern process that died were found in `<pickup>/.claimed` and are processed again. A file whose message had already been queued when the process died is queued a second time (the duplicate window, docs/CONNECTORS.md).",
        "None.");
    PICKUP_STARTED = (6026, "pickup.started", Info,
        "The pickup service watches its directory; fields give the directory and the polling interval.",
        "None.");
    DROP_WRITTEN = (6030, "drop.written", Info,
        "A message was written into a drop directory: its envelope file and then its message file, each fsynced, renamed to its final name, and the directory fsynced; fields give the queue id, the directory, the file and the recipients.",
        "None.", track = "delivered");
    DROP_FAILED = (6031, "drop.failed", Warning,
        "A message could not be written into a drop directory (missing directory, permissions, disk full); its recipients are deferred and tried again after the backoff. No partial file is left under a final name.",
        "Check the directory named in the event: it must exist and be writable by Tern.");
    DELIVERY_CONVERTED_7BIT = (6041, "delivery.converted.7bit", Info,
        "A message with 8-bit content was converted to 7 bit for a next hop without 8BITMIME (8-bit parts in quoted-printable or base64, 8-bit header fields as encoded words); the copy goes in this attempt, the stored message is unchanged. Fields give the parts and fields converted and both sizes.",
        "None. A DKIM signature over a converted part no longer verifies; sign 7-bit content, or route such destinations through a relay that offers 8BITMIME.");
    QUEUE_ADMIN_DELETED = (7001, "queue.admin.deleted", Notice,
        "An administrator deleted a message (admin API or `tern queue delete`; with no server running the command writes this event itself, with server = none); fields: queue_id, action, from_state, bounce (yes: the sender was sent a bounce for the recipients not yet delivered, as with 7003; no: removed silently).",
        "None; the event is the record of who removed what (see the tracking log).", track = "deleted");
    QUEUE_ADMIN_HELD = (7002, "queue.admin.held", Info,
        "An administrator moved a deferred message to the hold queue; it is not tried again until released.",
        "Release it (`tern queue release`) when it may go, or delete it.", track = "held");
    QUEUE_ADMIN_BOUNCED = (7003, "queue.admin.bounced", Notice,
        "An administrator bounced a message: every recipient not yet delivered failed with 5.0.0 bounced by the administrator, one bounce went to the sender through the usual DSN path (event 4004 gives its id; none for the null sender or NOTIFY=NEVER), and the message left the queue.",
        "None.", track = "admin_bounced");
    QUEUE_ADMIN_RELEASED = (7004, "queue.admin.released", Info,
        "An administrator released a message from the hold or poison queue (admin API or `tern queue release`): crash count reset, tried now (with no server running: at the next start, and the command writes this event itself, with server = none).",
        "None; if a poisoned message crashes Tern again it returns to the poison queue (event 4012).", track = "released");
    QUEUE_ADMIN_RETRIED = (7005, "queue.admin.retried", Info,
        "An administrator asked for a deferred message to be tried now instead of at its retry time.",
        "None.", track = "retried");
    QUEUE_ADMIN_RESUBMITTED = (7006, "queue.admin.resubmitted", Info,
        "An administrator resubmitted a poisoned message: its crash count was reset and it is tried now, like a release from poison.",
        "Watch for event 4012: a message that still crashes Tern is poisoned again.", track = "resubmitted");
    QUEUE_ADMIN_BULK = (7007, "queue.admin.bulk", Notice,
        "An administrator's action over every message a filter matched finished; fields: action, the filter, matched, touched, failed.",
        "If failed is not 0, the API answer lists each failure; messages being processed (incoming, active) are skipped with a conflict and can be acted on once they wait.");
    QUEUE_ADMIN_FAILED = (7008, "queue.admin.failed", Warning,
        "An administrator's action on a message failed with a spool error (disk full, I/O error); the message stays where it was, and a message that was waiting for a retry is retried as before. server = none: the action was done with no server running.",
        "Check the spool disk (event 4010 has the same cause), then repeat the action.");
    DESTINATION_SUSPENDED = (7021, "admin.destination.suspended", Notice,
        "An administrator suspended a destination (`tern dest suspend`, `POST /api/v1/destinations/{name}/suspend`): no new connection is made to it; its messages stay queued (deferred) and are not bounced while it is suspended, but still expire at the maximum queue lifetime. The suspension lasts until `resume` or a restart.",
        "Resume it (`tern dest resume NAME`) when the destination may receive again.");
    DESTINATION_RESUMED = (7022, "admin.destination.resumed", Notice,
        "An administrator resumed a suspended destination; its waiting messages are tried now.",
        "None.");
    DESTINATION_RETRY = (7023, "admin.destination.retry", Notice,
        "An administrator asked to retry a destination now (`tern dest retry`): its down mark is cleared and the messages waiting for it are tried at once; `messages` says how many. Right after a start, while the deferred backlog is still read (before event 4055), the retry also reaches each message not read yet that turns out to wait for it; `unread` then says how many are not read yet.",
        "None; if it goes down again, check the hosts named in event 4006.");
    ADMIN_RELOAD_REQUESTED = (7024, "admin.reload.requested", Info,
        "A reload was requested over the admin API (`POST /api/v1/reload`, `tern reload`); events 1007 or 1008 follow with its result.",
        "None.");
    ADMIN_TOKEN_MODE_FIXED = (7025, "admin.token.mode_fixed", Warning,
        "The admin token file (`<data_dir>/admin.token`) could be read by other users (field `mode`, octal, as found); Tern set it to 0600. Whoever could read it meanwhile may know the token.",
        "If other users could have read it, rotate the token: stop Tern, delete the file, start Tern (docs/OPERATIONS.md).");

    TRACKING_LOST = (7061, "tracking.lost", Warning,
        "The writer of the message tracking log fell behind (more than 16,384 events waiting) and some tracking records were not written; field `lost` counts them, and a `tracking.lost` record in the tracking log marks the gap. Mail flow never waits for the tracking log.",
        "None if it is rare (a burst); if it repeats, put the data directory on a faster disk or lower the traffic logged at debug level.");
    TRACKING_FAILED = (7062, "tracking.failed", Error,
        "The message tracking log could not be opened, written or rotated (fields give the directory and the error); records are lost until a write succeeds again. Logged once per run of failures. Mail flow is not affected.",
        "Check the tracking directory (`<data_dir>/tracking`): space, permissions, a file where the directory should be.");
    QUEUE_MESSAGE_ACTIVE = (7063, "queue.message.active", Debug,
        "The queue manager took a message into active/ for a delivery attempt and routed its pending recipients; fields give the sender, the attempt number, the pending recipients and the next hops they go to.",
        "None (a debug event; it is always in the tracking log as step `queued`).", track = "queued");
    DELIVERY_ATTEMPT = (7064, "delivery.attempt", Debug,
        "The result of one delivery attempt for some recipients of a message: `result` (delivered, deferred or failed), the next hop, the remote host and address that answered (empty when none did), the reply and the recipients.",
        "None (a debug event; it is always in the tracking log as step `attempt`). A `deferred` result is retried; see events 4002 and 4003 for what follows.", track = "attempt");
    LOG_LEVEL_CHANGED = (7065, "server.log_level.changed", Notice,
        "The lowest severity written to the event log was changed at run time (`tern log-level`, `PUT /api/v1/log-level`, or `server.log_level` at a reload); fields give the old and new level and who changed it. The tracking log is not affected.",
        "None; set it back to `info` after debugging (debug events are many).");
    SYSTEMD_WATCHDOG_WITHHELD = (7081, "systemd.watchdog.withheld", Error,
        "An essential worker (listener, queue manager, spool writer or DNS resolver; `worker` names it) is stalled, so Tern stops sending WATCHDOG=1 to systemd: if the worker does not recover within WatchdogSec, systemd restarts Tern (dist/tern.service). Only sent when Tern runs under systemd with a watchdog.",
        "Let systemd restart Tern; then look at the fields of event 5001 for the stalled worker (disk of a spool writer, DNS servers) and report the stall.");
    SYSTEMD_WATCHDOG_RESUMED = (7082, "systemd.watchdog.resumed", Notice,
        "The essential workers are healthy again before systemd's watchdog ran out; Tern sends WATCHDOG=1 again.",
        "None; see event 5003 for how long the stall lasted.");
    SYSTEMD_NOTIFY_FAILED = (7083, "systemd.notify.failed", Warning,
        "A notification to systemd (READY=1, RELOADING=1, STOPPING=1 or WATCHDOG=1; `message` says which) could not be sent to $NOTIFY_SOCKET, or that address is unusable. Logged once until a send succeeds. Without READY=1 systemd considers the start failed; without WATCHDOG=1 it restarts Tern.",
        "Check the unit (Type=notify, NotifyAccess=main) and that nothing else set NOTIFY_SOCKET in Tern's environment.");
    CLUSTER_CONNECTED = (8001, "cluster.connected", Info,
        "The node reached Redis for the first time since its start: limits, leases, destination state and membership are shared with the other nodes (docs/CLUSTER.md). Fields: node, node_id, mode.",
        "None.");
    CLUSTER_DEGRADED = (8002, "cluster.degraded", Warning,
        "Redis is unreachable (or did not answer within cluster.op_timeout_ms): the node decides alone, each cluster-wide limit scaled to cluster.local_share, destination marks kept locally; mail keeps flowing. Logged once when it happens; `/readyz` and `tern status` show `degraded` until event 8003. Fields: node, error, local_share.",
        "Bring Redis back (or its Sentinel master); the node reconnects by itself. While degraded, the cluster as a whole may exceed its shared limits by up to (nodes x local_share).");
    CLUSTER_RECOVERED = (8003, "cluster.recovered", Info,
        "Redis answers again after event 8002: limits and state are shared again. Fields: node.",
        "None.");
    CLUSTER_NODE_DEAD = (8004, "cluster.node.dead", Warning,
        "A node's heartbeat expired (no heartbeat for cluster.dead_after_ms): its connection leases have lapsed and its queue is stranded until it comes back or another node adopts its spool. Logged by one node only (the first to notice). Fields: node, noticed_by, dead_after_ms.",
        "Restart the node, or attach its spool to another node and run `tern spool adopt PATH` there (docs/CLUSTER.md, \"A node that dies\").");
    CLUSTER_NODE_ID_CONFLICT = (8005, "cluster.node_id.conflict", Error,
        "Another live node holds this node's cluster.node_id: queue ids of the two nodes are no longer recognisable by node (they stay unique with near certainty, by their random part). Logged once per start. Fields: node, node_id, holder.",
        "Give each node its own cluster.node_id (1 to 1023) and restart one of them.");
    DESTINATION_LIMIT_REACHED = (8011, "destination.limit.reached", Info,
        "A destination limit ([[delivery.destination_limits]]) is full: a delivery worker was refused a connection lease (`what` connections: max_connections open across the cluster) or a message (`what` messages: max_messages spent in the window). The job waits in memory and tries again; it is not a delivery failure and the destination is not marked down. Logged once per limit and kind per minute on each node. Fields: limit, what, max, next_hop, host, scope (cluster, or local when the node decides alone).",
        "None if expected. If mail to the destination backs up, raise the limit (with the receiver's agreement) or add nothing: the limit is what the receiver allows.");
    DESTINATION_LIMIT_WAIT_EXPIRED = (8012, "destination.limit.wait_expired", Notice,
        "A job waited delivery.destination_limit_wait_secs for a destination limit's lease or message allowance without getting it: its recipients are deferred (4.4.5) and retried with the usual backoff; the destination is not marked down. Logged once per limit per minute on each node. Fields: limit, what, next_hop, waited_secs.",
        "Mail to this destination arrives faster than its limit lets it out: raise the limit if the receiver allows, or expect the queue to drain slowly.");
    CLUSTER_DESTINATION_APPLIED = (8021, "cluster.destination.applied", Notice,
        "A destination's state set on another node was applied here (docs/cluster/state.md): `state` down (every host failed there; nothing is tried here either until the mark lapses), suspended (an administrator suspended it there; held until a resume on any node) or active (resumed or retried there: its waiting messages are tried now). Fields: next_hop, state, node (who set it), messages (jobs deferred, or messages made due).",
        "None; `tern dest` shows the mark and the node that set it. Act on it from any node (`tern dest resume|retry NAME`).");
    CLUSTER_SPOOL_ADOPTED = (8041, "cluster.spool.adopted", Notice,
        "This node took over another node's spool (`tern spool adopt`, or automatically): every message merged here with its record and crash count, and scheduled; the spool left there holds only its fence marker (and corrupt/ entries that could not be moved). Fields: path, node (whose spool it was), by, auto, incoming, active, deferred, hold, poison (adopted from each state), poisoned (active ones that reached queue.poison_threshold), already_here (a rerun after an interruption), corrupt_moved, corrupt_left, fenced_in_redis, secs.",
        "None. If fenced_in_redis is false, the spool's marker alone keeps its node from starting on it; keep that disk or clear nothing until the node is rebuilt (docs/cluster/adopt.md).");
    CLUSTER_SPOOL_FENCED = (8042, "cluster.spool.fenced", Error,
        "The server refused to start: its spool was adopted by another node (the `adopted` marker in the spool directory) or the cluster records an adoption of this node (`<prefix>:fence:<node>` in Redis). Starting would deliver mail another node now owns. Fields: node, path, by, at, source (marker or redis).",
        "Check that the adopting node has the mail (`tern queue list --cluster`), then clear the fence with `tern spool unfence` and start the node (docs/cluster/adopt.md).");
    CLUSTER_SPOOL_ADOPT_FAILED = (8043, "cluster.spool.adopt_failed", Error,
        "An adoption stopped before its end (an I/O error, a damaged spool, or the server stopping). Nothing is lost: every message is in one spool or in both; running the adoption again completes it. Fields: path, by, auto, error.",
        "Fix the cause named in the error and run `tern spool adopt PATH` again.");
    CLUSTER_FENCE_UNCHECKED = (8044, "cluster.fence.unchecked", Warning,
        "At start, Redis did not answer within the bound, so the cluster's fence for this node was not checked; the spool's own `adopted` marker was (and would have refused the start). Fields: node, error.",
        "None if this node's spool was not adopted. If it was adopted from a copy of its disk (no marker here), stop this node until Redis answers.");
    CLUSTER_MESSAGE_ADOPTED = (8045, "cluster.message.adopted", Debug,
        "A message moved here from another node's spool by an adoption; fields give its id, the node it came from, and its state there and here.",
        "None (a debug event; it is always in the tracking log as step `adopted`).", track = "adopted");
    CLUSTER_AUTO_ADOPT_SKIPPED = (8046, "cluster.spool.auto_adopt_skipped", Info,
        "A dead node's spool was not adopted automatically: no directory at cluster.adopt_path for it, or another node holds the adoption lock. Fields: node, path, reason.",
        "None; adopt it by hand (`tern spool adopt PATH`) when its disk is reachable.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_and_names_are_unique() {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for def in ALL {
            assert!(ids.insert(def.id), "duplicate id {}", def.id);
            assert!(names.insert(def.name), "duplicate name {}", def.name);
        }
    }

    #[test]
    fn ids_are_in_order() {
        assert!(ALL.windows(2).all(|w| w[0].id < w[1].id));
    }
}

#[cfg(test)]
mod docs_tests {
    /// docs/EVENTS.md must list every event with its id, name and severity.
    #[test]
    fn events_md_lists_every_event() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/EVENTS.md");
        let doc = std::fs::read_to_string(path).expect("docs/EVENTS.md exists");
        for def in super::ALL {
            let row = format!(
                "| {} | `{}` | {} |",
                def.id,
                def.name,
                def.severity.as_str()
            );
            assert!(
                doc.contains(&row),
                "docs/EVENTS.md lacks the row for {} {}",
                def.id,
                def.name
            );
            // The row gives the meaning and what the operator should do.
            let line = doc
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_default();
            let cells: Vec<&str> = line.split(" | ").collect();
            assert!(
                cells.len() >= 5
                    && cells
                        .iter()
                        .skip(3)
                        .all(|c| c.trim_matches(['|', ' ']).len() > 3),
                "docs/EVENTS.md: the row of {} needs its meaning and what to do",
                def.id
            );
        }
    }

    /// Every tracked event is listed in the tracking section of docs/EVENTS.md.
    #[test]
    fn events_md_lists_every_tracked_event() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/EVENTS.md");
        let doc = std::fs::read_to_string(path).expect("docs/EVENTS.md exists");
        let section = doc
            .split("## Events in the message tracking log")
            .nth(1)
            .expect("the tracking section");
        for def in super::ALL.iter().filter(|d| d.track.is_some()) {
            assert!(
                section.contains(&def.id.to_string()),
                "the tracking section of docs/EVENTS.md lacks {} {}",
                def.id,
                def.name
            );
        }
    }
}
