# understudy %post: the coordinator's system user and a certificate directory it can read;
# the unit is not enabled (see docs/install.md).
getent group understudy >/dev/null || groupadd -r understudy
getent passwd understudy >/dev/null || useradd -r -g understudy -d /var/lib/understudy -s /sbin/nologin understudy
install -d -m 0755 /etc/understudy
[ -d /etc/understudy/tls ] || install -d -m 0750 /etc/understudy/tls
[ "$(stat -c %G /etc/understudy/tls)" != root ] || chgrp understudy /etc/understudy/tls
systemctl daemon-reload >/dev/null 2>&1 || :
