-- ScaiVault schema v9: a reserved serial keeps the to-be-signed certificate it was reserved for
-- (issue #10: the intent is recorded before the token signs). Cleared once the certificate is
-- stored; at startup, reservations left by a crash are revoked (`Tx::reconcile_reservations`).
ALTER TABLE certificates ADD COLUMN tbs_der BLOB;
