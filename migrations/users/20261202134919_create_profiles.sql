-- Profiles: one per account, created when the auth service tells of a registration (never by
-- reading its database), removed when it tells of a deletion.
CREATE TABLE profiles (
    user_id      uuid        PRIMARY KEY,
    email        text        NOT NULL,
    display_name text,
    avatar_url   text,
    locale       text,
    time_zone    text,
    -- Custom attributes, checked against the admin's schema (`profile_schema`).
    attributes   jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    preferences  jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(preferences) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_email ON profiles (lower(email));
CREATE INDEX profiles_display_name ON profiles (lower(display_name));
CREATE INDEX profiles_attributes ON profiles USING gin (attributes jsonb_path_ops);

-- The admin's JSON Schema for custom attributes and the rules per attribute; one row.
CREATE TABLE profile_schema (
    one        boolean     PRIMARY KEY DEFAULT true CHECK (one),
    version    integer     NOT NULL,
    schema     jsonb       NOT NULL,
    rules      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO profile_schema (version, schema, rules)
VALUES (1, '{"type": "object"}'::jsonb, '{}'::jsonb);

-- What happened to an account, from the events that concern it, newest first.
CREATE TABLE activity (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid        NOT NULL,
    event_id    uuid        NOT NULL UNIQUE,
    event_type  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    summary     jsonb       NOT NULL
);
CREATE INDEX activity_user ON activity (user_id, id DESC);
