# %post of the scaivault RPM ($1: 1 = install, 2+ = upgrade). Idempotent. Never enables or starts
# scaivault.service: a CA daemon starts once its operator has prepared the token, the PIN and the
# configuration (/usr/share/doc/scaivault/OPERATIONS.md).
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/scaivault.conf || :
fi
[ -d /var/lib/scaivault ] || install -d -m 0700 -o scaivault -g scaivault /var/lib/scaivault
# As the .deb sets it: only root and the daemon read the configuration directory.
if [ -d /etc/scaivault ]; then
    chown root:scaivault /etc/scaivault && chmod 0750 /etc/scaivault || :
fi
# SoftHSM2's token directory belongs to group `ods` on Fedora/RHEL (`softhsm` on Debian).
for g in ods softhsm; do
    if getent group "$g" >/dev/null && ! id -nG scaivault | tr ' ' '\n' | grep -qx "$g"; then
        usermod -a -G "$g" scaivault || :
    fi
done
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -gt 1 ] && systemctl is-active --quiet scaivault.service; then
        echo "scaivault: scaivault.service still runs the previous version; restart it to use the new one" >&2
    fi
fi
exit 0
