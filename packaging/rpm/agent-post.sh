# understudy-agent %post: the certificate directory; the unit is not enabled (see docs/install.md).
install -d -m 0755 /etc/understudy
[ -d /etc/understudy/tls ] || install -d -m 0750 /etc/understudy/tls
systemctl daemon-reload >/dev/null 2>&1 || :
