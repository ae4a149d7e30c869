# Closures for scripts/bench, built by real Nix in a chroot store (see
# scripts/bench). `bbdir`: absolute path of a directory with bin/busybox.
#
# Attributes big-<N> (N in bigs) and small-<N> (N in smalls):
#
#   big-<N>      a NixOS-shaped root (bin/switch-to-configuration that exits
#                0, so `apply … boot --root DIR` accepts it) referencing
#                busybox and one path with data.bin of N MiB
#   small-<N>    a root referencing N small leaves (text files of 1-3 KiB
#                made by builtins.toFile at evaluation: no build per leaf)
#
# data.bin is deterministic and mildly compressible: 1 MiB blocks, each the
# same seeded pseudo-random block with every byte rotated by a per-block
# amount (so no block repeats within 255 MiB), every other block mapped onto
# 16 letters (4 bits of entropy). zstd -3 gets it to about 75 %.
{ bbdir, bigs ? [ ], smalls ? [ ] }:
let
  common = import ../tests/fixtures/common.nix { inherit bbdir; };
  inherit (common) mk busybox;

  data = mib: mk "fh-lite-bench-data-${toString mib}mib" ''
    mkdir -p $out
    awk 'BEGIN { srand(20250101); for (i = 0; i < 1048576; i++) printf "%c", int(rand() * 256) }' > blk
    l=abcdefghijklmnop; l=$l$l$l$l; l=$l$l$l$l
    rot() { printf '\\%03o-\\377' $1; if [ $1 -gt 0 ]; then printf '\\000-\\%03o' $(($1 - 1)); fi; }
    i=0
    while [ $i -lt ${toString mib} ]; do
      k=$(( (i / 2) % 255 + 1 ))
      if [ $((i % 2)) -eq 0 ]; then
        tr '\000-\377' "$(rot $k)" < blk
      else
        tr '\000-\377' "$(rot $k)" < blk | tr '\000-\377' "$l"
      fi
      i=$((i + 1))
    done > $out/data.bin
    rm blk
  '';

  # What `fh-lite apply nixos … boot --root DIR` needs of a system: an
  # executable bin/switch-to-configuration (not run for boot under --root).
  # refs.txt lists the references (passAsFile: no argument length limit).
  rootWith = name: refs: builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = busybox;
    refs = builtins.concatStringsSep "\n" refs + "\n";
    passAsFile = [ "refs" ];
    args = [ "sh" "-eu" "-c" ''
      ${busybox} mkdir -p $out/bin
      ${busybox} printf '#!%s sh\nexit 0\n' ${busybox} > $out/bin/switch-to-configuration
      ${busybox} chmod 0555 $out/bin/switch-to-configuration
      ${busybox} cp "$refsPath" $out/refs.txt
    '' ];
    PATH = "/no-such-path";
  };

  leaf = i:
    let s = toString i;
        line = "leaf ${s} of the fh-lite small-paths benchmark: 0123456789abcdefghijklmnopqrstuvwxyz\n";
        # 1, 2 or 3 KiB: 12, 24 or 36 lines of about 86 bytes.
        n = 12 + 12 * (i - 3 * (i / 3));
        rep = k: if k == 0 then "" else line + rep (k - 1);
    in builtins.toFile "fh-lite-bench-leaf-${s}" (rep n);

  range = n: builtins.genList (i: i) n;
in
builtins.listToAttrs (
  map (mib: { name = "big-${toString mib}"; value = rootWith "fh-lite-bench-big-${toString mib}mib" [ "${data mib}" ]; }) bigs
  ++ map (n: { name = "small-${toString n}"; value = rootWith "fh-lite-bench-small-${toString n}" (map leaf (range n)); }) smalls
)
