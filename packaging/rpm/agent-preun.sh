# understudy-agent %preun: on erase (not upgrade), warn about workloads still running here.
if [ "$1" = 0 ] && [ -d /run/systemd/system ]; then
    /usr/share/understudy/agent-removal-warning.sh || :
    systemctl stop understudy-agent >/dev/null 2>&1 || :
fi
