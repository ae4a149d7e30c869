#!@bb@ sh
# The init of the lab's trial-boot system @variant@ (systems.nix): points
# /run/booted-system and /run/current-system at itself, starts the
# watchdog daemon as NixOS's systemd.watchdog.runtimeTime would (fed every
# 5 s, resets after 30 s without), and hands over to the lab's /lab/init.
# The `hang` variant arms the watchdog (10 s) and never feeds it: it hangs.
export PATH=/bin:/usr/bin
ln -sfn @out@ /run/booted-system
ln -sfn @out@ /run/current-system
echo "LAB-SYSTEM @variant@"
if [ "@variant@" = hang ]; then
    watchdog -T 10 -t 100000 /dev/watchdog || echo "LAB-ERROR cannot arm the watchdog"
    echo "LAB-HANG the watchdog is armed (10 s) and never fed"
    while :; do sleep 3600; done
fi
watchdog -T 30 -t 5 /dev/watchdog || echo "LAB-ERROR cannot start the watchdog daemon"
exec /lab/init
