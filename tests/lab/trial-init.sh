#!@bb@ sh
# The init of the lab's trial-boot system @variant@ (systems.nix): points
# /run/booted-system and /run/current-system at itself, records itself in
# /etc/lab/system (the activation at boot), starts the
# watchdog daemon as NixOS's systemd.watchdog.runtimeTime would (fed every
# 5 s, resets after 30 s without), and hands over to the lab's /lab/init.
# The `hang` variant arms the watchdog (10 s) and never feeds it: it hangs.
export PATH=/bin:/usr/bin
ln -sfn @out@ /run/booted-system
ln -sfn @out@ /run/current-system
# The boot activated this system (as NixOS's stage 2 runs its activation
# script): recorded where the lab's health check looks.
mkdir -p /etc/lab && echo "@out@" > /etc/lab/system.tmp && mv /etc/lab/system.tmp /etc/lab/system
echo "LAB-SYSTEM @variant@"
if [ "@variant@" = hang ]; then
    watchdog -T 10 -t 100000 /dev/watchdog || echo "LAB-ERROR cannot arm the watchdog"
    echo "LAB-HANG the watchdog is armed (10 s) and never fed"
    while :; do sleep 3600; done
fi
watchdog -T 30 -t 5 /dev/watchdog || echo "LAB-ERROR cannot start the watchdog daemon"
exec /lab/init
