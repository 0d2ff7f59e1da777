# %pre of the scaivault RPM ($1: 1 = install, 2+ = upgrade). Idempotent.
# RPM creates files with their final owner, so the group `scaivault` (owner group of
# /etc/scaivault/scaivault.toml) must exist before the payload is unpacked. The sysusers file is
# not on disk yet, hence its line on stdin.
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u scaivault - "ScaiVault PKI daemon" /var/lib/scaivault -' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/scaivault.conf - || :
fi
if ! getent passwd scaivault >/dev/null; then
    getent group scaivault >/dev/null || groupadd -r scaivault
    useradd -r -g scaivault -d /var/lib/scaivault -M -s /sbin/nologin \
        -c "ScaiVault PKI daemon" scaivault
fi
exit 0
