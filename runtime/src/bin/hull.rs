//! `hull`: the runc-compatible command line. Parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hull_runtime::cli::{self, GlobalOpts};
use hull_runtime::logging::{self, LogFormat};
use hull_runtime::sandbox::vm;
use hull_runtime::sandbox::vm::hypervisor::VmmChoice;
use hull_runtime::sandbox::vm::supervisor as vm_supervisor;
use hull_runtime::sandbox::SandboxKind;
use hull_runtime::supervisor;

#[derive(Parser, Debug)]
#[command(
    name = "hull",
    version,
    about = "OCI runtime running each container in a microVM"
)]
struct Cli {
    /// Root directory for storage of container state
    #[arg(long, default_value = "/run/hull")]
    root: PathBuf,
    /// Set the log file to write hull logs to (default is stderr)
    #[arg(long)]
    log: Option<PathBuf>,
    /// Set the log format ('text' (default), or 'json')
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Enable debug logging
    #[arg(long)]
    debug: bool,
    /// Enable systemd cgroup support (accepted; there is no systemd to use)
    #[arg(long)]
    systemd_cgroup: bool,
    /// Ignore cgroup permission errors ('true', 'false', or 'auto'); accepted
    #[arg(long, hide = true)]
    rootless: Option<String>,
    /// Where containers run: 'vm' (a microVM each) or 'os' (namespaces and cgroups
    /// only). Default: the config's io.hull.sandbox annotation, else 'vm'
    #[arg(long, value_enum)]
    sandbox: Option<SandboxKind>,
    /// Hypervisor of the VM sandbox: 'hull' (hull-vmm, needs hardware KVM), 'qemu'
    /// (QEMU microvm) or 'auto' (hull-vmm where it can boot the guest, else QEMU).
    /// Default: the config's io.hull.vmm annotation, else 'auto'
    #[arg(long, value_enum)]
    vmm: Option<VmmChoice>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container
    Create(cli::create::Create),
    /// Execute the user-defined process in a created container
    Start(cli::start::Start),
    /// Output the state of a container
    State(cli::state::State),
    /// Send the specified signal (default: SIGTERM) to the container's init process
    Kill(cli::kill::Kill),
    /// Delete any resources held by the container
    Delete(cli::delete::Delete),
    /// Create and run a container
    Run(cli::run::Run),
    /// Execute a new process inside the container
    Exec(Box<cli::exec::Exec>),
    /// Display the processes running inside a container
    Ps(cli::ps::Ps),
    /// List containers started by hull with the given root
    List(cli::list::List),
    /// Pause all processes inside the container
    Pause(cli::pause::Pause),
    /// Resume all processes that have been previously paused
    Resume(cli::pause::Resume),
    /// Update container resource constraints
    Update(Box<cli::update::Update>),
    /// Display container events such as OOM notifications, cpu, memory, and IO usage statistics
    Events(cli::events::Events),
    /// Show the enabled features
    Features(cli::features::Features),
    /// Create a new specification file
    Spec(cli::spec::SpecCmd),
    #[command(name = "__supervise", hide = true)]
    Supervise(supervisor::Supervise),
    #[command(name = "__vm-supervise", hide = true)]
    VmSupervise(vm_supervisor::VmSupervise),
    #[command(name = "__vm-member", hide = true)]
    VmMember(vm::member::VmMember),
    #[command(name = "__vm-share", hide = true)]
    VmShare(vm::pod::VmShare),
    #[command(name = "__exec-attach", hide = true)]
    ExecAttach(cli::exec::ExecAttach),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    let g = GlobalOpts {
        root: args.root,
        log: args.log,
        log_format: args.log_format,
        debug: args.debug,
        systemd_cgroup: args.systemd_cgroup,
        sandbox: args.sandbox,
        vmm: args.vmm,
    };
    if let Err(e) = logging::init(g.log.as_deref(), g.log_format, g.debug) {
        eprintln!("hull: {e}");
        return ExitCode::FAILURE;
    }
    let res = match &args.command {
        Command::Create(a) => cli::create::create(&g, a).map(|_| 0),
        Command::Start(a) => cli::start::start(&g, a).map(|()| 0),
        Command::State(a) => cli::state::state(&g, a).map(|()| 0),
        Command::Kill(a) => cli::kill::kill(&g, a).map(|()| 0),
        Command::Delete(a) => cli::delete::delete(&g, a).map(|()| 0),
        Command::Run(a) => cli::run::run(&g, a),
        Command::Exec(a) => cli::exec::exec(&g, a),
        Command::Ps(a) => cli::ps::ps(&g, a).map(|()| 0),
        Command::List(a) => cli::list::list(&g, a).map(|()| 0),
        Command::Pause(a) => cli::pause::pause(&g, a).map(|()| 0),
        Command::Resume(a) => cli::pause::resume(&g, a).map(|()| 0),
        Command::Update(a) => cli::update::update(&g, a).map(|()| 0),
        Command::Events(a) => cli::events::events(&g, a).map(|()| 0),
        Command::Features(a) => cli::features::features(a).map(|()| 0),
        Command::Spec(a) => cli::spec::spec(a).map(|()| 0),
        Command::Supervise(a) => Ok(supervisor::supervise(&g, a)),
        Command::VmSupervise(a) => Ok(vm_supervisor::supervise(&g, a)),
        Command::VmMember(a) => Ok(vm::member::supervise(&g, a)),
        Command::VmShare(a) => vm::pod::vm_share(&g, a).map(|()| 0),
        Command::ExecAttach(a) => cli::exec::exec_attach(&g, a),
    };
    match res {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            logging::report_error(&e.to_string());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_what_the_runc_shim_sends() {
        let c = Cli::try_parse_from([
            "hull",
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/tmp/pty.sock",
            "c1",
        ])
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(matches!(c.command, Command::Create(ref a) if a.container_id == "c1"));
        let c = Cli::try_parse_from([
            "hull",
            "exec",
            "--process",
            "/p.json",
            "--detach",
            "--pid-file",
            "/e.pid",
            "c1",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Exec(ref a) if a.detach && a.command.is_empty()));
        let c = Cli::try_parse_from(["hull", "exec", "-t", "c1", "sh", "-c", "ls -l"]).unwrap();
        assert!(matches!(c.command, Command::Exec(ref a) if a.command == ["sh", "-c", "ls -l"]));
        let c = Cli::try_parse_from(["hull", "kill", "--all", "c1", "KILL"]).unwrap();
        assert!(matches!(c.command, Command::Kill(ref a) if a.all && a.signal == "KILL"));
        let c = Cli::try_parse_from(["hull", "ps", "--format", "json", "c1"]).unwrap();
        assert!(matches!(c.command, Command::Ps(_)));
        let c = Cli::try_parse_from(["hull", "--sandbox", "os", "run", "-d", "-b", "/b", "c1"])
            .unwrap();
        assert_eq!(c.sandbox, Some(SandboxKind::Os));
        assert!(matches!(c.command, Command::Run(ref a) if a.detach));
        assert!(Cli::try_parse_from(["hull", "--sandbox", "xen", "list"]).is_err());
    }
}
