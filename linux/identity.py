"""``process.user``: additional groups, gid, uid, umask.

setgroups before setgid before setuid: each later call drops the privilege the earlier ones
need. Capabilities survive the uid change only with PR_SET_KEEPCAPS (see capabilities.py).
"""

from __future__ import annotations

import os

from runwasm.linux.errors import SetupError
from runwasm.oci.runtime_spec import User


def switch(user: User, *, in_user_ns: bool) -> None:
    try:
        # setgroups is refused in a user namespace whose /proc/<pid>/setgroups is "deny"
        if user.additional_gids or not in_user_ns:
            os.setgroups(list(user.additional_gids))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as err:
        raise SetupError(f"failed to switch to uid={user.uid} gid={user.gid} "
                         f"additionalGids={list(user.additional_gids)}: [errno {err.errno}] {err.strerror}") from err
    if user.umask is not None:
        os.umask(user.umask)
    else:
        os.umask(0o022)
