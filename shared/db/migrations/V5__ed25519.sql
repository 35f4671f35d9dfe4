-- Optional Standard Webhooks v1a (ed25519) signing per endpoint: the
-- private key sealed like the secret, the public key in clear.
ALTER TABLE endpoints
    ADD COLUMN ed25519_key        text,
    ADD COLUMN ed25519_public_key text;
