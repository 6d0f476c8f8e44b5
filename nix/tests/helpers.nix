# Evaluation tests of the generated helpers lib.nix and cron.nix (the
# example's copy, examples/homelab/backup/), in
# the style of nixpkgs' lib/tests: a list of { name; expr; expected; }.
# Evaluates to the failed cases, so [ ] means every case passed:
#
#   nix-instantiate --eval --strict --json --arg generated ./examples/homelab/backup nix/tests/helpers.nix
#
# Builtins only, no nixpkgs. One case uses lib.nix's default writeText
# (builtins.toFile); with --readonly-mode nothing is written to the store.
{
  # A generated folder holding lib.nix and cron.nix; the flake check
  # passes a copy.
  generated ? ../../examples/homelab/backup,
}:
let
  worker = "/nix/store/00000000000000000000000000000000-backup-worker";
  exe = "${worker}/bin/backup-worker";

  helpers = import (generated + "/lib.nix") {
    inherit worker;
    writeText = name: text: "/fake/${name}";
    checkConfig = name: file: "/checked${file}";
  };
  # The defaults of lib.nix's optional arguments.
  plainHelpers = import (generated + "/lib.nix") { inherit worker; };
  cron = import (generated + "/cron.nix");
  inherit (helpers)
    mkBackupService
    mkBackupTimer
    mkBackupDirectories
    mkWorkerConfig
    mkBackupDrillService
    mkBackupDrillTimer
    ;

  # Hostile destinations: a space, a quote, a backslash and a % specifier.
  oddPath = ''/mnt/my "usb" disk\x/100%n'';
  backupConfig = {
    paths = [
      "/var/backups/app"
      oddPath
      "/mnt/optional"
    ];
    optionalPaths = [ "/mnt/optional" ];
    schedule = "0 2 * * *";
  };
  args = {
    name = "app";
    serviceName = "docker-app.service";
    dataPaths = [ "/var/lib/app" ];
    user = "app";
    group = "backup";
    inherit backupConfig;
  };
  service = mkBackupService args;
  timer = mkBackupTimer { name = "app"; inherit backupConfig; };
  throws = expr: !(builtins.tryEval expr).success;
  drillArgs = args // {
    backupConfig = backupConfig // {
      drill = {
        schedule = "@weekly";
        identityFile = "/run/secrets/age-identity";
      };
    };
  };

  cases = [
    {
      name = "mkBackupDirectories: one quoted tmpfiles rule per required path, no age, optional ones never created";
      expr = mkBackupDirectories {
        inherit backupConfig;
        user = "app";
        group = "backup";
      };
      expected = [
        ''d "/var/backups/app" 0750 "app" "backup" -''
        ''d "/mnt/my \"usb\" disk\\x/100%%n" 0750 "app" "backup" -''
      ];
    }
    {
      name = "mkBackupTimer: cron schedule";
      expr = timer.timerConfig.OnCalendar;
      expected = [ "*-*-* 02:00:00" ];
    }
    {
      name = "mkBackupTimer: @weekly is cron's Sunday";
      expr =
        (mkBackupTimer {
          name = "app";
          backupConfig = backupConfig // {
            schedule = "@weekly";
          };
        }).timerConfig.OnCalendar;
      expected = [ "Sun *-*-* 00:00:00" ];
    }
    {
      name = "mkBackupTimer: defaults and timers.target";
      expr = {
        inherit (timer) wantedBy;
        inherit (timer.timerConfig) Persistent RandomizedDelaySec;
      };
      expected = {
        wantedBy = [ "timers.target" ];
        Persistent = true;
        RandomizedDelaySec = 0;
      };
    }
    {
      name = "mkBackupTimer: timerConfig merges over the generated settings";
      expr =
        (mkBackupTimer {
          name = "app";
          backupConfig = backupConfig // {
            timerConfig = {
              Persistent = false;
              AccuracySec = "1min";
            };
          };
        }).timerConfig;
      expected = {
        OnCalendar = [ "*-*-* 02:00:00" ];
        Persistent = false;
        RandomizedDelaySec = 0;
        AccuracySec = "1min";
      };
    }
    {
      name = "mkBackupService: no Requires=/BindsTo= on the application";
      expr = builtins.filter (k: service ? ${k} || service.unitConfig ? ${k}) [
        "requires"
        "bindsTo"
        "partOf"
        "Requires"
        "BindsTo"
        "PartOf"
      ];
      expected = [ ];
    }
    {
      name = "mkBackupService: a switch does not start a backup";
      expr = service.restartIfChanged;
      expected = false;
    }
    {
      name = "mkBackupService: oneshot";
      expr = service.serviceConfig.Type;
      expected = "oneshot";
    }
    {
      name = "mkBackupService: run and recover with the checked config";
      expr = {
        inherit (service.serviceConfig) ExecStart ExecStopPost;
      };
      expected = {
        ExecStart = "${exe} run --config /checked/fake/app-backup.json";
        ExecStopPost = "${exe} recover --config /checked/fake/app-backup.json";
      };
    }
    {
      name = "mkBackupService: without checkConfig the file is used as is";
      expr = builtins.match "${exe} recover --config ${builtins.storeDir}/[a-z0-9]{32}-app-backup.json" (
        builtins.unsafeDiscardStringContext
          (plainHelpers.mkBackupService args).serviceConfig.ExecStopPost
      ) != null;
      expected = true;
    }
    {
      name = "mkBackupService: paths quoted, % escaped, data paths and required destinations mounted";
      expr = {
        inherit (service.unitConfig) RequiresMountsFor;
        inherit (service.serviceConfig) ReadWritePaths;
      };
      expected = {
        RequiresMountsFor = [
          ''"/var/lib/app"''
          ''"/var/backups/app"''
          ''"/mnt/my \"usb\" disk\\x/100%%n"''
        ];
        ReadWritePaths = [
          ''-"/var/backups/app"''
          ''-"/mnt/my \"usb\" disk\\x/100%%n"''
          ''-"/mnt/optional"''
        ];
      };
    }
    {
      name = "mkBackupService: runtime directory kept for recover";
      expr = {
        inherit (service.serviceConfig) RuntimeDirectory RuntimeDirectoryPreserve;
      };
      expected = {
        RuntimeDirectory = "backup-worker/app";
        RuntimeDirectoryPreserve = "yes";
      };
    }
    {
      name = "mkWorkerConfig: defaults filled in, serviceName a list";
      expr = mkWorkerConfig args;
      expected = {
        name = "app";
        serviceName = [ "docker-app.service" ];
        dataPaths = [ "/var/lib/app" ];
        user = "app";
        group = "backup";
        backup = {
          paths = backupConfig.paths;
          optionalPaths = [ "/mnt/optional" ];
          format = "tar.gz";
          maxRetentionDays = 0;
          retentionSnapshots = 7;
          minKeep = 1;
          minSizeRatio = 0.5;
          onCalendar = [ "*-*-* 02:00:00" ];
          exclude = [ ];
          preBackup = "";
          postBackup = "";
          compressionLevel = 0;
          threads = 0;
          captureFirst = false;
          stateDirectory = "/run/backup-worker/app";
        };
      };
    }
    {
      name = "defaults: one definition, rendered from Go (retentionSnapshots was 0 here, 7 in modules)";
      expr = {
        inherit (helpers.defaults.backup) retentionSnapshots minKeep minSizeRatio format;
      };
      expected = {
        retentionSnapshots = 7;
        minKeep = 1;
        minSizeRatio = 0.5;
        format = "tar.gz";
      };
    }
    {
      name = "mkWorkerConfig: calendar rules reach the JSON when on; one that maxRetentionDays cuts short throws";
      expr = {
        backup = builtins.intersectAttrs {
          keepDaily = null;
          keepWeekly = null;
          keepMonthly = null;
        } (mkWorkerConfig (args // { backupConfig = backupConfig // { keepDaily = 7; keepMonthly = 6; }; })).backup;
        cut = throws (builtins.toJSON (mkWorkerConfig (args // { backupConfig = backupConfig // { keepMonthly = 6; maxRetentionDays = 30; }; })));
        fits = throws (builtins.toJSON (mkWorkerConfig (args // { backupConfig = backupConfig // { keepMonthly = 6; maxRetentionDays = 186; }; })));
        negative = throws (builtins.toJSON (mkWorkerConfig (args // { backupConfig = backupConfig // { keepDaily = -1; }; })));
      };
      expected = {
        backup = {
          keepDaily = 7;
          keepMonthly = 6;
        };
        cut = true;
        fits = false;
        negative = true;
      };
    }
    {
      name = "mkBackupService: normal priority while units are stopped (no Nice/idle)";
      expr = builtins.filter (k: service.serviceConfig ? ${k}) [
        "Nice"
        "IOSchedulingClass"
        "CPUSchedulingPolicy"
      ];
      expected = [ ];
    }
    {
      name = "quoting refuses what no unit or tmpfiles line can carry";
      expr = map throws [
        (helpers.systemdQuote "/a\nExecStartPre=/bin/sh")
        (helpers.tmpfilesQuote true "/a\nr /etc/important")
        (mkBackupDirectories {
          backupConfig.paths = [ "/var/backups/x\nr /etc/important" ];
          user = "app";
          group = "app";
        })
        (mkBackupDirectories {
          backupConfig.paths = [ "/var/backups/x" ];
          user = "my user";
          group = "app";
        })
        (mkBackupService (args // { backupConfig = backupConfig // { paths = [ "/x\nExecStartPre=/bin/sh" ]; }; }))
        (mkBackupService (args // { name = "a\nb"; }))
        (mkWorkerConfig (args // { backupConfig = backupConfig // { paths = [ "/var/backups/{nmae}" ]; }; }))
        (mkBackupService (args // { backupConfig = backupConfig // { timeoutStartSec = "1\nExecStartPre=/bin/sh"; }; }))
        (mkBackupTimer {
          name = "app";
          backupConfig = backupConfig // {
            schedule = "daily\nOnCalendar=minutely";
          };
        })
        (mkBackupService (args // { description = "x\nExecStartPre=/bin/sh"; })).description
      ];
      expected = [
        true
        true
        true
        true
        true
        true
        true
        true
        true
        true
      ];
    }
    {
      name = "{name} is substituted in destinations";
      expr =
        (mkWorkerConfig (
          args
          // {
            backupConfig = {
              paths = [ "/srv/{name}" ];
            };
          }
        )).backup.paths;
      expected = [ "/srv/app" ];
    }
    {
      name = "the container runtime's CLI is on the PATH only with pkgs";
      expr = map (p: p.name) (
        (import (generated + "/lib.nix") {
          inherit worker;
          pkgs.docker = {
            name = "docker";
          };
        }).mkBackupService
          args
      ).path;
      expected = [ "docker" ];
    }
    {
      name = "cronToOnCalendar: @weekly";
      expr = cron "@weekly";
      expected = [ "Sun *-*-* 00:00:00" ];
    }
    {
      name = "cronToOnCalendar: both day fields restricted means either";
      expr = cron "30 4 1 * mon";
      expected = [
        "Mon *-*-* 04:30:00"
        "*-*-01 04:30:00"
      ];
    }
    {
      name = "cronToOnCalendar: a calendar expression passes through, trimmed";
      expr = cron "  Mon..Fri *-*-* 03:00  ";
      expected = [ "Mon..Fri *-*-* 03:00" ];
    }
    {
      name = "cronToOnCalendar: 30 February never fires";
      expr = throws (cron "0 0 30 2 *");
      expected = true;
    }
    {
      name = "cronToOnCalendar: @reboot, out of range and 6 fields throw";
      expr = map (s: throws (cron s)) [
        "@reboot"
        "60 * * * *"
        "0 0 * * * *"
      ];
      expected = [
        true
        true
        true
      ];
    }
    {
      name = "mkWorkerConfig: backup.drill only with a schedule, converted as the backup's, with the default scratch directory";
      expr = [
        ((mkWorkerConfig args).backup ? drill)
        (mkWorkerConfig drillArgs).backup.drill
      ];
      expected = [
        false
        {
          onCalendar = [ "Sun *-*-* 00:00:00" ];
          scratchDirectory = "/var/lib/backup-worker/drill";
          identityFile = "/run/secrets/age-identity";
        }
      ];
    }
    {
      name = "mkBackupDrillService: runs drill with the backup's config, idle, the identity on this unit only";
      expr =
        let
          drill = mkBackupDrillService drillArgs;
          backup = mkBackupService drillArgs;
        in
        {
          exec = drill.serviceConfig.ExecStart;
          same = drill.serviceConfig.ExecStart == builtins.replaceStrings [ " run " ] [ " drill " ] backup.serviceConfig.ExecStart;
          inherit (drill.serviceConfig) Nice IOSchedulingClass LoadCredential;
          backupCredentials = backup.serviceConfig.LoadCredential or [ ];
        };
      expected = {
        exec = "${exe} drill --config /checked/fake/app-backup.json";
        same = true;
        Nice = "19";
        IOSchedulingClass = "idle";
        LoadCredential = [ "drill-identity:/run/secrets/age-identity" ];
        backupCredentials = [ ];
      };
    }
    {
      name = "mkBackupDrillTimer: the drill schedule; without one, or with a bad one, evaluation fails";
      expr = [
        (mkBackupDrillTimer {
          name = "app";
          inherit (drillArgs) backupConfig;
        }).timerConfig.OnCalendar
        (throws (mkBackupDrillTimer { name = "app"; inherit backupConfig; }).timerConfig)
        (throws (mkBackupDrillService args).serviceConfig)
        (throws
          (mkBackupDrillTimer {
            name = "app";
            backupConfig = backupConfig // {
              drill.schedule = "0 0 30 2 *";
            };
          }).timerConfig
        )
      ];
      expected = [
        [ "Sun *-*-* 00:00:00" ]
        true
        true
        true
      ];
    }
    {
      name = "mkBackupTimer: an invalid schedule fails evaluation";
      expr = throws (
        mkBackupTimer {
          name = "app";
          backupConfig = backupConfig // {
            schedule = "0 0 30 2 *";
          };
        }
      ).timerConfig.OnCalendar;
      expected = true;
    }
  ];
in
map (c: {
  inherit (c) name expected;
  result = c.expr;
}) (builtins.filter (c: c.expr != c.expected) cases)
