#!/bin/sh
# Install the configuration `callvault asterisk render` wrote, then run Asterisk in the
# foreground as the asterisk user (as the sandbox does).
set -eu
src=/run/callvault-asterisk
if [ ! -f "$src/asterisk.conf" ]; then
    echo "callvault-asterisk: no rendered configuration in $src" >&2
    exit 1
fi
for f in "$src"/*.conf; do
    install -o root -g asterisk -m 0640 "$f" /srv/callvault/etc/
done
install -d -o asterisk -g asterisk -m 0750 /srv/callvault/spool/recording
exec /usr/sbin/asterisk -f -n -g -U asterisk -G asterisk -C /srv/callvault/etc/asterisk.conf
