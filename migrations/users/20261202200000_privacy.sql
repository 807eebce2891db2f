-- The privacy rights the users service coordinates across the platform. An export or an
-- erasure is asked of every service over events; each answer is kept as it arrives.
-- `expected` is the set of services asked (PRIVACY_SERVICES when the request was made).

-- Everything the platform holds about an account, gathered for its owner. Personal data:
-- a new export of an account replaces its earlier ones, and erasure removes them.
CREATE TABLE exports (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL,
    requested_by uuid        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    expected     text[]      NOT NULL
);
CREATE INDEX exports_user ON exports (user_id, requested_at DESC);

CREATE TABLE export_parts (
    export_id   uuid        NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    service     text        NOT NULL,
    data        jsonb       NOT NULL,
    answered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, service)
);

-- Erasures and who confirmed them. Kept after the account is gone, as the proof that it
-- was erased: an id and outcomes, never anything the account held.
CREATE TABLE erasures (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL,
    requested_by uuid        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    expected     text[]      NOT NULL
);
CREATE INDEX erasures_user ON erasures (user_id, requested_at DESC);

CREATE TABLE erasure_answers (
    erasure_id  uuid        NOT NULL REFERENCES erasures (id) ON DELETE CASCADE,
    service     text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('erased', 'nothing_held', 'retained', 'refused')),
    detail      text        NOT NULL,
    answered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (erasure_id, service)
);
