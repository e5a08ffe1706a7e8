# NixOS module for microvm, for users of the reference setup (NixOS +
# microvm.nix + comin). It writes /etc/microvm/infra.yaml from
# services.microvm.settings (the options mirror the config file; see
# docs/configuration.md) and runs the daemon, either from that file or
# from git (services.microvm.gitops).
#
#   imports = [ ./nix/module.nix ];
#   services.microvm = {
#     enable = true;
#     settings = {
#       defaults = { vcpu = 2; memory = "1G"; volumes = [ { name = "data"; mountPoint = "/mnt/storage"; size = "64G"; } ]; };
#       vms.vm1 = { index = 1; image = "docker.io/wholelottahoopla/sandbox:latest"; ports = [ 8080 ]; };
#       vms.vm2.index = 2;
#     };
#   };
#
# Tested here only by parsing (nix-instantiate --parse) when Nix is
# installed, and by a Go test that checks every key of the config file has
# its option; the machine this project is built on has no Nix.
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf types literalExpression;
  cfg = config.services.microvm;
  yaml = pkgs.formats.yaml { };

  size = types.either types.str types.int;
  port = types.either types.port types.str;

  volume = types.submodule {
    options = {
      name = mkOption { type = types.str; description = "Volume name: the image file, ext4 label and virtio serial (at most 20 bytes)."; };
      mountPoint = mkOption { type = types.str; description = "Absolute path the guest mounts it at."; };
      size = mkOption { type = size; description = "Size of the sparse image, e.g. \"64G\"; growing grows the volume, shrinking is refused."; };
    };
  };

  egressRule = types.submodule {
    options = {
      to = mkOption { type = types.str; description = "A CIDR or an IPv4 address."; };
      ports = mkOption { type = types.nullOr (types.listOf port); default = null; description = "Ports such as \"5432/tcp\"; none: every port and protocol."; };
    };
  };

  registryLogin = types.submodule {
    options = {
      username = mkOption { type = types.str; description = "The registry user."; };
      password = mkOption { type = types.str; description = "The password or token, age-encrypted (microvm secret encrypt)."; };
    };
  };
  identity = types.submodule {
    options = {
      issuer = mkOption { type = types.nullOr types.str; default = null; description = "The OIDC issuer in the signing certificate, exactly."; };
      issuerRegExp = mkOption { type = types.nullOr types.str; default = null; description = "A regular expression the issuer must match."; };
      subject = mkOption { type = types.nullOr types.str; default = null; description = "The certificate's subject alternative name (email or URI), exactly."; };
      subjectRegExp = mkOption { type = types.nullOr types.str; default = null; description = "A regular expression the subject must match."; };
    };
  };
  imagePolicy = types.submodule {
    options = {
      keys = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "Public keys (PEM, or the absolute path of one on the host) an image from a registry must carry a valid cosign signature by."; };
      identities = mkOption { type = types.nullOr (types.listOf identity); default = null; description = "Certificate identities (keyless signing) an image may be signed by instead, checked against trustedRoot."; };
      trustedRoot = mkOption { type = types.nullOr types.str; default = null; description = "Absolute path of a sigstore trusted_root.json naming the certificate authorities the identities' certificates come from."; };
      allowLocal = mkOption { type = types.nullOr types.bool; default = null; description = "Let images that never came from a registry boot unsigned."; };
    };
  };
  egress = types.submodule {
    options = {
      internet = mkOption { type = types.nullOr types.bool; default = null; description = "false cuts the VM off everything beyond its gateway but its allows (per VM)."; };
      allow = mkOption { type = types.nullOr (types.listOf egressRule); default = null; description = "Destinations opened."; };
      deny = mkOption { type = types.nullOr (types.listOf egressRule); default = null; description = "Destinations closed."; };
    };
  };

  secret = types.submodule {
    options = {
      path = mkOption { type = types.str; description = "Absolute path of the file in the guest (in its memory, never on a data volume)."; };
      mode = mkOption { type = types.nullOr types.str; default = null; description = "Octal permission bits (default \"0400\")."; };
      owner = mkOption { type = types.nullOr types.str; default = null; description = "User name or uid owning the file in the guest (default root)."; };
      age = mkOption { type = types.str; description = "The secret as an ASCII-armored age file encrypted to the host's key."; };
    };
  };

  kernel = types.either (types.enum [ "host" ]) (types.submodule {
    options = {
      path = mkOption { type = types.str; description = "The kernel image."; };
      modules = mkOption { type = types.nullOr types.str; default = null; description = "Its modules directory (holding modules.dep)."; };
    };
  });

  # Every key is optional: unset keys come from defaults, then built-ins.
  vmOptions = {
    index = mkOption { type = types.nullOr (types.ints.between 1 255); default = null; description = "Gives the subnet 10.<index>.0.0/24 and the MAC."; };
    subnet = mkOption { type = types.nullOr types.str; default = null; description = "The VM's IPv4 network in CIDR form."; };
    subnet6 = mkOption { type = types.nullOr types.str; default = null; description = "The VM's IPv6 network, a /64 (default: derived from host.ipv6Prefix)."; };
    hypervisor = mkOption { type = types.nullOr (types.enum [ "qemu" "cloud-hypervisor" "firecracker" ]); default = null; description = "The VMM backend."; };
    vcpu = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Virtual CPUs."; };
    memory = mkOption { type = types.nullOr size; default = null; description = "Guest RAM, e.g. \"1G\"."; };
    memoryMin = mkOption { type = types.nullOr size; default = null; description = "As far as the host may balloon the VM's memory down when it runs short (host.reclaim); unset: never."; };
    kernel = mkOption { type = types.nullOr kernel; default = null; description = "\"host\" or { path, modules }."; };
    kernelParams = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "Added to the guest kernel's command line after microvm's own, one parameter an item (e.g. \"apparmor=0\"); microvm's own (console=, panic=, reboot=, tsc=, microvm.*, root and init) are refused."; };
    image = mkOption { type = types.nullOr types.str; default = null; description = "A store image name or an OCI reference."; };
    registries = mkOption { type = types.nullOr (types.attrsOf registryLogin); default = null; description = "Logins for this VM's pulls only, by registry host, laid over host.registries."; };
    imagePolicy = mkOption { type = types.nullOr imagePolicy; default = null; description = "Which cosign signatures an image from a registry must carry before it is pulled and booted."; };
    pullPolicy = mkOption { type = types.nullOr (types.enum [ "missing" "always" "never" ]); default = null; description = "When an OCI image is pulled."; };
    volumes = mkOption { type = types.nullOr (types.listOf volume); default = null; description = "Persistent data volumes (never deleted by a config change)."; };
    sshKeys = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "Root's authorized keys."; };
    secrets = mkOption { type = types.nullOr (types.listOf secret); default = null; description = "Files given to the VM from age-encrypted secrets (ASCII-armored ciphertext), decrypted on the host."; };
    ports = mkOption { type = types.nullOr (types.listOf port); default = null; description = "Ports reachable from the host and the tailnet."; };
    egress = mkOption { type = types.nullOr (types.either (types.enum [ "none" ]) egress); default = null; description = "Where the VM may connect beyond the VM networks: \"none\", or { internet, allow, deny }."; };
    command = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "The workload's argv."; };
    args = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "The workload's arguments, after command or the image's entrypoint."; };
    env = mkOption { type = types.nullOr (types.attrsOf types.str); default = null; description = "The workload's environment."; };
    workdir = mkOption { type = types.nullOr types.str; default = null; description = "The workload's working directory."; };
    user = mkOption { type = types.nullOr types.str; default = null; description = "The workload's user, as docker run --user takes it: name, uid, name:group or uid:gid."; };
    init = mkOption { type = types.nullOr (types.enum [ "microvm" "image" ]); default = null; description = "Who runs as PID 1."; };
    store = mkOption { type = types.nullOr (types.enum [ "auto" "virtiofs" "9p" "block" ]); default = null; description = "How the image reaches the guest; block lets QEMU save the VM (stop --save)."; };
    autostart = mkOption { type = types.nullOr types.bool; default = null; description = "Whether the daemon starts the VM."; };
    restart = mkOption { type = types.nullOr (types.enum [ "always" "on-failure" "no" ]); default = null; description = "Restart policy."; };
    stopTimeout = mkOption { type = types.nullOr types.str; default = null; description = "How long a clean shutdown may take, e.g. \"30s\"."; };
    host = mkOption { type = types.nullOr types.str; default = null; description = "The hypervisor host that runs the VM (multi-host repositories)."; };
    healthCheck = mkOption { type = types.nullOr (types.attrsOf (types.either types.int types.str)); default = null; description = "{ tcp = PORT; } or { http = PORT; path = \"/healthz\"; }"; };
    snapshots = mkOption { type = types.nullOr (types.attrsOf types.anything); default = null; description = "{ keep = 7; every = \"24h\"; backup = { repository = \"/srv/restic\"; password = \"<age>\"; keep = 30; }; } volume snapshot retention, schedule and off-host backup."; };
    limits = mkOption { type = types.nullOr (types.attrsOf (types.either types.number types.str)); default = null; description = "{ cpuWeight, cpus, memory } cgroup caps on the hypervisor."; };
    template = mkOption { type = types.nullOr types.bool; default = null; description = "The VM is a template: booted once, saved, and cloned (from), never run itself."; };
    pool = mkOption { type = types.nullOr types.int; default = null; description = "How many ready clones of this template the daemon keeps for microvm take."; };
    from = mkOption { type = types.nullOr types.str; default = null; description = "The template this VM is a clone of (docs/clones.md)."; };
  };

  # Drop unset (null) keys so the file says only what was written.
  clean = v:
    if builtins.isAttrs v then lib.filterAttrs (_: x: x != null) (lib.mapAttrs (_: clean) v)
    else if builtins.isList v then map clean v
    else v;

  file = yaml.generate "infra.yaml" (clean cfg.settings);
in
{
  options.services.microvm = {
    enable = mkEnableOption "the microvm daemon";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The microvm package (microvm and microvm-init).";
    };

    settings = mkOption {
      description = "The fleet file, as Nix values (docs/configuration.md).";
      default = { vms = { }; };
      type = types.submodule {
        options = {
          host = mkOption {
            default = { };
            type = types.submodule {
              options = {
                externalInterface = mkOption { type = types.nullOr types.str; default = null; description = "The NAT uplink (\"auto\": the default route's)."; };
                allowedTCPPorts = mkOption { type = types.nullOr (types.listOf types.port); default = null; description = "The host's own open TCP ports."; };
                tailscale = mkOption { type = types.nullOr (types.submodule { options = { advertiseRoutes = mkOption { type = types.bool; default = false; description = "Advertise the VM subnets."; }; socket = mkOption { type = types.nullOr types.str; default = null; description = "tailscaled's socket (default the tailscale command's own)."; }; interface = mkOption { type = types.nullOr types.str; default = null; description = "tailscaled's TUN device (default tailscale0)."; }; port = mkOption { type = types.nullOr types.port; default = null; description = "tailscaled's UDP port, opened on a filtered uplink (default 41641)."; }; }; }); default = null; description = "Tailscale subnet routing."; };
                ipv6Prefix = mkOption { type = types.nullOr types.str; default = null; description = "Where the VMs' IPv6 networks come from: unset (a unique local prefix behind NAT66), a routed /32 to /56, or \"none\"."; };
                dns = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "Resolvers the VMs' DNS forwards other names to (addresses or address:port; default the host's own)."; };
                serviceCIDRs = mkOption { type = types.nullOr (types.listOf types.str); default = null; description = "The Kubernetes Service ranges of the cluster the host is a node of: connections from a VM that kube-proxy sent to another VM pass the isolation."; };
                reclaim = mkOption { type = types.nullOr (types.submodule { options = { below = mkOption { type = size; description = "The host's available memory under which VMs with a memoryMin are ballooned down to it."; }; above = mkOption { type = types.nullOr size; default = null; description = "The available memory over which their memory is given back (default twice below)."; }; }; }); default = null; description = "Taking memory back from VMs under pressure (off when unset)."; };
                ksm = mkOption { type = types.nullOr (types.submodule { options = { enabled = mkOption { type = types.bool; default = false; description = "Turn the host's kernel samepage merging on."; }; pagesToScan = mkOption { type = types.nullOr types.ints.unsigned; default = null; description = "Pages scanned per wake-up (default 1000)."; }; sleep = mkOption { type = types.nullOr types.str; default = null; description = "Sleep between scans (default 20ms)."; }; }; }); default = null; description = "Kernel samepage merging (left as it is when unset)."; };
                registries = mkOption { type = types.nullOr (types.attrsOf registryLogin); default = null; description = "Logins the host pulls with, by registry host (host or host:port); others come from the docker config file."; };
              };
            };
            description = "Host settings.";
          };
          defaults = mkOption { type = types.submodule { options = vmOptions; }; default = { }; description = "Merged into every VM."; };
          vms = mkOption { type = types.attrsOf (types.submodule { options = vmOptions; }); default = { }; description = "The VMs by name."; };
          peers = mkOption { type = types.nullOr (types.attrsOf (types.submodule { options = { address = mkOption { type = types.str; description = "The daemon's --peer-listen address, host:port."; }; key = mkOption { type = types.str; description = "sha256:… of its peer key, as microvm peer key prints it there."; }; }; })); default = null; description = "The hosts whose daemons move VMs to each other (microvm move, drain)."; };
          network = mkOption {
            type = types.nullOr (types.submodule {
              options = {
                allow = mkOption { type = types.nullOr (types.listOf (types.submodule { options = { from = mkOption { type = types.str; }; to = mkOption { type = types.str; }; ports = mkOption { type = types.listOf port; }; }; })); default = null; description = "VM-to-VM exceptions to isolation."; };
                forwards = mkOption { type = types.nullOr (types.listOf (types.submodule { options = { hostPort = mkOption { type = types.port; }; to = mkOption { type = types.str; }; proto = mkOption { type = types.nullOr (types.enum [ "tcp" "udp" ]); default = null; }; }; })); default = null; description = "Host port forwards."; };
                egress = mkOption { type = types.nullOr egress; default = null; description = "Where every VM may connect beyond the VM networks (allow, deny)."; };
                domain = mkOption { type = types.nullOr types.str; default = null; description = "The VMs' DNS domain: <vm>.<domain> (default microvm.internal)."; };
              };
            });
            default = null;
            description = "Exceptions to isolation and forwards.";
          };
        };
      };
    };

    gitops = {
      url = mkOption { type = types.nullOr types.str; default = null; description = "Deploy from this repository instead of settings (docs/gitops.md)."; };
      branch = mkOption { type = types.str; default = "main"; description = "The branch deployed."; };
      path = mkOption { type = types.str; default = "infra.yaml"; description = "The file's path in the repository."; };
      interval = mkOption { type = types.str; default = "60s"; description = "Poll interval."; };
      tokenFile = mkOption { type = types.nullOr types.path; default = null; description = "HTTPS access token file."; };
      sshKeyFile = mkOption { type = types.nullOr types.path; default = null; description = "SSH key for ssh:// remotes."; };
      requireSignedBy = mkOption { type = types.listOf types.path; default = [ ]; description = "OpenPGP key or allowed_signers files; only commits they signed are deployed."; };
      healthTimeout = mkOption { type = types.str; default = "120s"; description = "Time changed VMs have to become healthy."; };
      postDeployHook = mkOption { type = types.nullOr types.str; default = null; description = "Shell command run after every deploy."; };
    };

    saveOnShutdown = mkOption { type = types.bool; default = false; description = "At host shutdown, save each VM that can be saved (QEMU, store = \"block\") and resume it after the boot, instead of shutting it down cleanly (the others still shut down)."; };
    metricsListen = mkOption { type = types.nullOr types.str; default = null; example = "127.0.0.1:9190"; description = "Serve Prometheus metrics here."; };
    extraArgs = mkOption { type = types.listOf types.str; default = [ ]; description = "More daemon flags."; };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
    environment.etc."microvm/infra.yaml".source = file;
    users.groups.microvm = { };
    # Hypervisors run as this user, without capabilities; never in the
    # microvm group, which may use the API socket (docs/security.md).
    # Each VM's hypervisor runs as an id of its own from this range.
    users.users.microvm = {
      isSystemUser = true; group = "nogroup"; description = "microvm hypervisors";
      subUidRanges = [ { startUid = 1879048192; count = 65536; } ];
      subGidRanges = [ { startGid = 1879048192; count = 65536; } ];
    };
    boot.kernelModules = [ "tun" "vhost_net" ];
    networking.nftables.enable = lib.mkDefault true;

    # Every VM stopped cleanly (or saved) at host shutdown (ordered after
    # the daemon, so it stops first); a restart of the daemon stops none.
    systemd.services.microvm-guests = {
      description = "microvm: stop every VM cleanly at host shutdown";
      wantedBy = [ "multi-user.target" ];
      after = [ "microvm.service" ];
      wants = [ "microvm.service" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${pkgs.coreutils}/bin/true";
        ExecStop = "${cfg.package}/bin/microvm stop --all --save=${lib.boolToString cfg.saveOnShutdown}";
        TimeoutStopSec = "10min";
      };
    };

    systemd.services.microvm = {
      description = "microvm: a fleet of micro-VMs from a declarative file";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      path = with pkgs; [ qemu nftables e2fsprogs iproute2 kmod util-linux git xz ];
      restartTriggers = [ file ];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/microvm" "daemon" "--init-dir" "${cfg.package}/libexec/microvm" ]
          ++ (if cfg.gitops.url == null then [ "--config" "/etc/microvm/infra.yaml" ] else
            [ "--git-url" cfg.gitops.url "--git-branch" cfg.gitops.branch "--git-path" cfg.gitops.path
              "--git-interval" cfg.gitops.interval "--health-timeout" cfg.gitops.healthTimeout ]
            ++ lib.optionals (cfg.gitops.tokenFile != null) [ "--git-token-file" cfg.gitops.tokenFile ]
            ++ lib.optionals (cfg.gitops.sshKeyFile != null) [ "--git-ssh-key" cfg.gitops.sshKeyFile ]
            ++ lib.concatMap (k: [ "--require-signed-by" k ]) cfg.gitops.requireSignedBy
            ++ lib.optionals (cfg.gitops.postDeployHook != null) [ "--post-deploy-hook" cfg.gitops.postDeployHook ])
          ++ lib.optionals (cfg.metricsListen != null) [ "--metrics-listen" cfg.metricsListen ]
          ++ cfg.extraArgs);
        # VMs outlive the daemon; a restart adopts them.
        KillMode = "process";
        Restart = "always";
        RestartSec = 2;
        StateDirectory = "microvm";
        CacheDirectory = "microvm";
        RuntimeDirectory = "microvm";
        RuntimeDirectoryPreserve = true;
      };
    };
  };
}
