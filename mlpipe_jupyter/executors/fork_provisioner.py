"""Fork-started kernels, plugged into jupyter_client as a kernel provisioner.

``ForkProvisioner`` is a ``LocalProvisioner`` whose ``launch_kernel`` asks the kernel
template (``kernel_template``, reached through ``template_client``) for a fork instead of
starting a new Python. Everything else is jupyter_client's: the connection file and ports
(``pre_launch``), the environment, the kernel client, interrupt, shutdown. The fork is a
process like any other kernel's — its own pid, session and process group — so ``poll``,
``wait``, ``send_signal`` and ``kill`` work on it unchanged (``ForkedProcess`` has the
``Popen`` methods they use).

Fallback: when the template cannot serve (no socket and it will not start, a refused or
failed fork, another protocol version, a kernel spec that does not start ipykernel in this
Python), the kernel is started the usual way and ``fallback_reason`` says why; the step
log repeats it.

Registered as the ``mlpipe-fork`` entry point of ``jupyter_client.kernel_provisioners``
(so a kernel spec may name it); ``use_fork_provisioner`` makes it available without the
entry point and selects it for a kernel manager.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

from mlpipe_jupyter.executors.kernel_template import fork_enabled
from mlpipe_jupyter.executors.template_client import (  # noqa: F401  (this module's API too)
    ForkedProcess,
    TemplateUnavailable,
    ensure_template,
    fork_kernel,
    status,
    stop_all,
    stop_template,
)

PROVISIONER_NAME = "mlpipe-fork"
ENTRY_POINT = "mlpipe_jupyter.executors.fork_provisioner:ForkProvisioner"


# -- the provisioner --------------------------------------------------------------------------
class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
    """A ``LocalProvisioner`` that forks kernels from the template, and starts them the
    usual way when it cannot (``fallback_reason`` says why)."""

    fallback_reason: str | None = None
    template_pid: int | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if not fork_enabled():  # the user's choice: nothing to report
            return await super().launch_kernel(cmd, **kwargs)
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            process = fork_kernel(cmd, env, cwd, kwargs.get("stdout"), kwargs.get("stderr"))
        except TemplateUnavailable as exc:
            self.fallback_reason = str(exc)
            self.log.info("kernel started normally: %s", exc)
            return await super().launch_kernel(cmd, **kwargs)
        self._forked: ForkedProcess | None = process
        self.process = process  # type: ignore[assignment]  # Popen's methods, see ForkedProcess
        self.pid = process.pid
        self.pgid = process.pid  # a session leader
        self.cwd = cwd
        return self.connection_info

    async def cleanup(self, restart: bool = False) -> None:
        forked: ForkedProcess | None = getattr(self, "_forked", None)
        if forked is not None:
            forked.close()
            self._forked = None
        await super().cleanup(restart=restart)


def register() -> None:
    """Make the provisioner known to jupyter_client without the installed entry point (a
    checkout not reinstalled since the entry point was added)."""
    from importlib.metadata import EntryPoint

    from jupyter_client.provisioning.factory import KernelProvisionerFactory

    KernelProvisionerFactory.provisioners.setdefault(
        PROVISIONER_NAME,
        EntryPoint(PROVISIONER_NAME, ENTRY_POINT, KernelProvisionerFactory.GROUP_NAME))


def use_fork_provisioner(manager: Any) -> bool:
    """Make ``manager`` (a KernelManager, before its start) start its kernel through the
    fork provisioner, by its kernel spec's ``kernel_provisioner`` metadata (the manager's own
    copy of the spec). A spec that names another provisioner keeps it. True when selected."""
    register()
    spec = manager.kernel_spec
    metadata = spec.metadata
    chosen = metadata.get("kernel_provisioner", {}).get("provisioner_name")
    if chosen not in (None, "local-provisioner", PROVISIONER_NAME):
        return False
    metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER_NAME, "config": {}}
    return True
