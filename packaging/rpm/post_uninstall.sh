# %postun of the scaivault RPM ($1: 0 = erase, 1+ = upgrade). Idempotent.
# The database (/var/lib/scaivault), the configuration, the PIN file, the user and — above all —
# the HSM token with the CA keys stay: RPM has no purge, and destroying CA keys is a key ceremony.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
