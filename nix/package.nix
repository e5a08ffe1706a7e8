# microvm built from this repository with buildGoModule. vendorHash must be
# set to the hash Nix reports on the first build (lib.fakeHash until then):
# the project's machine has no Nix to compute it.
{ lib, buildGoModule }:

buildGoModule {
  pname = "microvm";
  version = "0.1.0";
  src = lib.cleanSource ./..;
  vendorHash = lib.fakeHash;
  subPackages = [ "cmd/microvm" "cmd/microvm-init" ];
  env.CGO_ENABLED = 0;
  ldflags = [ "-s" "-w" "-X main.Version=0.1.0" ];
  postInstall = ''
    mkdir -p $out/libexec/microvm
    mv $out/bin/microvm-init $out/libexec/microvm/
  '';
  meta = {
    description = "A small fleet of isolated micro-VMs from one declarative file";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
    mainProgram = "microvm";
  };
}
