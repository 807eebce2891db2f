-- Templates, recipients and their preferences, and every message with its delivery.

-- A template's versions: a change is a new version, so a queued message keeps the one it was
-- accepted with. One row per (key, locale, version); `en` is the fallback locale.
CREATE TABLE templates (
    key         text        NOT NULL CHECK (key ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    locale      text        NOT NULL CHECK (locale ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$'),
    version     integer     NOT NULL CHECK (version > 0),
    subject     text        NOT NULL,
    html        text,
    text_body   text        NOT NULL,
    -- Sent even to those who opted out (a password reset the user asked for).
    critical    boolean     NOT NULL DEFAULT false,
    category    text        NOT NULL DEFAULT 'general',
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, locale, version)
);

-- A platform account, as the auth service's events describe it, and how it wants to be
-- reached. Made from `auth.user.registered.v1`, removed with `auth.user.deleted.v1`.
CREATE TABLE recipients (
    user_id     uuid        PRIMARY KEY,
    email       text        NOT NULL,
    phone       text,
    locale      text,
    -- Nothing but critical messages, on any channel.
    opted_out   boolean     NOT NULL DEFAULT false,
    -- {"email": false} turns a channel off; a channel not named is on.
    channels    jsonb       NOT NULL DEFAULT '{}',
    -- {"news": false} turns a category off; a category not named is on.
    categories  jsonb       NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Addresses that unsubscribed (RFC 8058 one-click), from a category or from everything ('*').
-- Kept by address: mail to someone without an account is honoured too.
CREATE TABLE suppressions (
    address     text        NOT NULL,
    category    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (address, category)
);

CREATE TABLE messages (
    id               uuid        PRIMARY KEY,
    -- Who asked: the caller's account, or null for an event the service reacted to.
    requested_by     uuid,
    -- `api`, or the type of the event that caused it.
    origin           text        NOT NULL,
    user_id          uuid,
    channel          text        NOT NULL CHECK (channel IN ('email', 'sms')),
    address          text        NOT NULL,
    template         text        NOT NULL,
    template_version integer     NOT NULL,
    locale           text        NOT NULL,
    category         text        NOT NULL,
    critical         boolean     NOT NULL DEFAULT false,
    -- The template's data; cleared once the message is done with (it may hold a token).
    data             jsonb,
    -- Set for messages that gather events under a key until `send_at`.
    digest_key       text,
    subject          text,
    status           text        NOT NULL CHECK (status IN
                       ('scheduled', 'queued', 'sending', 'sent', 'failed', 'given_up',
                        'suppressed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    send_at          timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    -- A message being sent is leased: one whose sender died is taken again after this.
    leased_until     timestamptz,
    last_error       text,
    provider         text,
    unsubscribe_digest bytea     UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz
);

-- What the sender takes next.
CREATE INDEX messages_due ON messages (next_attempt_at)
    WHERE status IN ('scheduled', 'queued', 'sending');
-- The open digest of a recipient and key, per sender and template version and locale: items
-- of another sender or template start their own.
CREATE UNIQUE INDEX messages_open_digest
    ON messages (address, channel, digest_key, requested_by, template, template_version, locale)
    WHERE digest_key IS NOT NULL AND status = 'scheduled';
CREATE INDEX messages_by_requester ON messages (requested_by, created_at DESC, id DESC);
CREATE INDEX messages_by_user ON messages (user_id, created_at DESC, id DESC);

-- Requests made with an Idempotency-Key: one key per caller, the request it came with (its
-- digest) and the message it made, so a replay answers the same and a reuse is refused.
CREATE TABLE requests (
    requested_by     uuid        NOT NULL,
    idempotency_key  text        NOT NULL,
    request_digest   bytea       NOT NULL,
    message_id       uuid        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (requested_by, idempotency_key)
);

-- Every attempt at delivery and what the server answered.
CREATE TABLE attempts (
    message_id  uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed', 'given_up')),
    provider    text,
    detail      text,
    PRIMARY KEY (message_id, attempt)
);

-- The platform's own mail, in English and French. Admins add versions and locales through
-- `PUT /api/v1/templates/{key}/{locale}`.
INSERT INTO templates (key, locale, version, subject, html, text_body, critical, category) VALUES
('welcome', 'en', 1,
 'Welcome{% if name %}, {{ name }}{% endif %}',
 '<p>Welcome{% if name %}, {{ name }}{% endif %}!</p><p>Your account {{ email }} is ready.</p>',
 'Welcome{% if name %}, {{ name }}{% endif %}!

Your account {{ email }} is ready.', false, 'account'),
('welcome', 'fr', 1,
 'Bienvenue{% if name %}, {{ name }}{% endif %}',
 '<p>Bienvenue{% if name %}, {{ name }}{% endif %} !</p><p>Votre compte {{ email }} est prêt.</p>',
 'Bienvenue{% if name %}, {{ name }}{% endif %} !

Votre compte {{ email }} est prêt.', false, 'account'),
('password_reset', 'en', 1,
 'Reset your password',
 '<p>Someone asked to reset the password of {{ email }}.</p><p><a href="{{ reset_url }}">Choose a new password</a> before {{ expires_at }}.</p><p>Your reset token: <code>{{ token }}</code></p><p>If it was not you, ignore this mail.</p>',
 'Someone asked to reset the password of {{ email }}.

Choose a new password before {{ expires_at }}: {{ reset_url }}

Your reset token: {{ token }}

If it was not you, ignore this mail.', true, 'security'),
('password_reset', 'fr', 1,
 'Réinitialisez votre mot de passe',
 '<p>Quelqu''un a demandé à réinitialiser le mot de passe de {{ email }}.</p><p><a href="{{ reset_url }}">Choisissez un nouveau mot de passe</a> avant {{ expires_at }}.</p><p>Votre jeton : <code>{{ token }}</code></p><p>Si ce n''était pas vous, ignorez ce message.</p>',
 'Quelqu''un a demandé à réinitialiser le mot de passe de {{ email }}.

Choisissez un nouveau mot de passe avant {{ expires_at }} : {{ reset_url }}

Votre jeton : {{ token }}

Si ce n''était pas vous, ignorez ce message.', true, 'security'),
('digest', 'en', 1,
 '{{ items | length }} new {% if items | length == 1 %}notification{% else %}notifications{% endif %}',
 '<ul>{% for item in items %}<li>{{ item.text }}</li>{% endfor %}</ul>',
 '{% for item in items %}- {{ item.text }}
{% endfor %}', false, 'digest');
