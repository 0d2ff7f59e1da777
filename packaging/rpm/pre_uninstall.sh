# %preun of the scaivault RPM ($1: 0 = erase, 1+ = upgrade). Idempotent.
# On erase, stop (and disable) the daemon before its files go; an upgrade leaves it running.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now scaivault.service >/dev/null 2>&1 || :
fi
exit 0
