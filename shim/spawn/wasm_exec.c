/* runwasm-wasm-exec: the workload of a plain Wasm task, from its spawn to the exec of wasmtime-min.
 *
 * The shim server posix_spawn()s this program (new session, default signal dispositions, empty
 * signal mask, the fds it needs at their own numbers) for a task whose whole plan the server
 * could make itself (shim/spawn/native.py): the `wasmtime-min` argv, the precompiled artifact and
 * the preopens are ready, and what is left is what only the task's own process can do. In the
 * order runwasm.shim.spawn.wasm_workload and runwasm.wasm.child do it:
 *
 *   1. join the task cgroup (-j: one `tasks` file per hierarchy, "0" written to each);
 *   2. check that the container's user may open the module (-o), with the spec's ids, groups and
 *      effective capabilities as effective credentials (saved ids kept at root), then switch back;
 *   3. drop: rlimits (-r), oomScoreAdj (-s), the bounding set (-b), KEEPCAPS, setgroups/setresgid/
 *      setresuid (-G/-g/-u), umask (-m), the capability sets after runc's execve (-S), ambient
 *      (-A, after a clear), KEEPCAPS off, noNewPrivileges (-n);
 *   4. report {"type": "ready"} on the control socket (-c), then block until {"type": "start"}
 *      (anything else, or EOF: exit 1 without running anything);
 *   5. stdin/stdout/stderr (-0/-1/-2) onto fds 0-2, blocking again; the seccomp filter (-F: an
 *      fd holding the BPF program the server compiled from linux.seccomp), then, without
 *      noNewPrivileges, the final capability sets (-a 1: CAP_SYS_ADMIN was kept until the filter
 *      was loaded); execveat() the CLI (-x, an O_PATH fd) with the argv after "--" and this
 *      process's environment.
 *
 * A failure before `ready` is reported on the control socket as runwasm's workloads report it
 * ({"type": "error", "kind", "status", "message"}, runwasm.oci.control) and the process exits 1;
 * a failed filter load or exec after `start` writes the reason to the task's stderr and exits
 * 127. No scheduler, I/O priority or memory policy: tasks with one take the Python workload.
 * Every fd but stdio, the ones named here and the plan's (-k: the module's artifact, the
 * preopens, which wasmtime-min inherits) is closed first, as the zygote closes them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_JOIN 32
#define MAX_RLIMITS 32
#define MAX_GROUPS 256
#define MAX_AMBIENT 64
#define MAX_KEEP 64

extern char **environ;

static int control_fd = -1;

struct rlim { int index; char name[32]; int resource; unsigned long long soft, hard; };

/* ---- reporting ------------------------------------------------------------------------------ */

static void json_string(char *out, size_t cap, size_t *len, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (*len < cap) out[(*len)++] = '"';
    for (; *s && *len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[(*len)++] = '\\'; out[(*len)++] = (char)c; }
        else if (c < 0x20) {
            out[(*len)++] = '\\'; out[(*len)++] = 'u'; out[(*len)++] = '0'; out[(*len)++] = '0';
            out[(*len)++] = hex[c >> 4]; out[(*len)++] = hex[c & 15];
        } else out[(*len)++] = (char)c;
    }
    if (*len < cap) out[(*len)++] = '"';
}

/* Report a set-up error the way runwasm.oci.control.report_error does, then exit 1. */
static void fail(const char *kind, const char *status, const char *fmt, ...)
{
    char message[2048], packet[8192];
    size_t len = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    len += (size_t)snprintf(packet, sizeof packet, "{\"type\": \"error\", \"kind\": ");
    json_string(packet, sizeof packet - 64, &len, kind);
    len += (size_t)snprintf(packet + len, sizeof packet - len, ", \"message\": ");
    json_string(packet, sizeof packet - 64, &len, message);
    len += (size_t)snprintf(packet + len, sizeof packet - len, ", \"status\": ");
    json_string(packet, sizeof packet - 8, &len, status);
    packet[len++] = '}';
    if (control_fd >= 0) {
        if (send(control_fd, packet, len, MSG_NOSIGNAL) < 0) { /* the shim is gone: nobody to tell */ }
    } else {
        dprintf(2, "runwasm-wasm-exec: %s\n", message);
    }
    _exit(1);
}

static void usage(const char *what)
{
    fail("InvalidPayloadError", "invalid_argument", "runwasm-wasm-exec: bad arguments: %s", what);
}

/* ---- argument parsing ----------------------------------------------------------------------- */

static long long number(const char *text, int base, const char *what)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, base);
    if (errno || end == text || *end) usage(what);
    return v;
}

static unsigned long long unumber(const char *text, int base, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, base);
    if (errno || end == text || *end) usage(what);
    return v;
}

/* split "a:b:c..." in place into at most n fields; returns how many */
static int fields(char *text, char **out, int n)
{
    int k = 0;
    out[k++] = text;
    for (char *p = text; *p && k < n; p++)
        if (*p == ':') { *p = 0; out[k++] = p + 1; }
    return k;
}

/* ---- capabilities --------------------------------------------------------------------------- */

static int capget3(uint64_t *eff, uint64_t *perm, uint64_t *inh)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0) return -1;
    *eff = d[0].effective | ((uint64_t)d[1].effective << 32);
    *perm = d[0].permitted | ((uint64_t)d[1].permitted << 32);
    *inh = d[0].inheritable | ((uint64_t)d[1].inheritable << 32);
    return 0;
}

static int capset3(uint64_t eff, uint64_t perm, uint64_t inh)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {
        {(uint32_t)eff, (uint32_t)perm, (uint32_t)inh},
        {(uint32_t)(eff >> 32), (uint32_t)(perm >> 32), (uint32_t)(inh >> 32)},
    };
    return (int)syscall(SYS_capset, &h, d);
}

static int last_cap(void)
{
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    char buf[16] = {0};
    if (fd < 0) return 40;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n > 0 ? atoi(buf) : 40;
}

/* "[1, 2]" as Python prints a list of ints */
static void list_text(char *out, size_t cap, const gid_t *ids, int n)
{
    size_t len = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < n && len + 24 < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, i ? ", %u" : "%u", (unsigned)ids[i]);
    snprintf(out + len, cap - len, "]");
}

static int int_order(const void *a, const void *b)
{
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static void close_others(int *keep, int n)
{
    unsigned int from = 3;
    qsort(keep, (size_t)n, sizeof *keep, int_order);
    for (int k = 0; k < n; k++) {
        if (keep[k] < (int)from) continue;
        if ((unsigned int)keep[k] > from && close_range(from, (unsigned int)keep[k] - 1, 0) < 0)
            fail("SetupError", "internal", "close_range: %s", strerror(errno));
        from = (unsigned int)keep[k] + 1;
    }
    if (close_range(from, ~0U, 0) < 0)
        fail("SetupError", "internal", "close_range: %s", strerror(errno));
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *join[MAX_JOIN];
    int njoin = 0;
    struct rlim rl[MAX_RLIMITS];
    int nrl = 0;
    int ambient[MAX_AMBIENT];
    int nambient = 0, ambient_given = 0;
    gid_t groups[MAX_GROUPS];
    int ngroups = 0;
    long long uid = -1, gid = -1, oom = LLONG_MIN, umask_value = 022;
    int bounding_given = 0, sets_given = 0, nnp = 0, guest_caps_given = 0;
    uint64_t bounding = 0, set_e = 0, set_p = 0, set_i = 0, guest_eff = 0;
    int stdio_fd[3] = {-1, -1, -1}, cli_fd = -1, check_fd = -1, filter_fd = -1, hold_admin = 0;
    int keep[MAX_KEEP + 8];
    int nkeep = 0;
    char *check = NULL;
    const char *check_rel = NULL, *check_host = NULL;
    const char *where = "the module";
    int i;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--")) { i++; break; }
        if (i + 1 >= argc) usage(opt);
        char *val = argv[++i];
        if (!strcmp(opt, "-c")) control_fd = (int)number(val, 10, "-c");
        else if (!strcmp(opt, "-j")) { if (njoin == MAX_JOIN) usage("-j"); join[njoin++] = val; }
        else if (!strcmp(opt, "-o")) check = val;
        else if (!strcmp(opt, "-P")) check_rel = val;
        else if (!strcmp(opt, "-H")) check_host = val;
        else if (!strcmp(opt, "-u")) uid = number(val, 10, "-u");
        else if (!strcmp(opt, "-g")) gid = number(val, 10, "-g");
        else if (!strcmp(opt, "-G")) {
            for (char *tok = strtok(val, ","); tok; tok = strtok(NULL, ",")) {
                if (ngroups == MAX_GROUPS) usage("-G");
                groups[ngroups++] = (gid_t)unumber(tok, 10, "-G");
            }
        }
        else if (!strcmp(opt, "-E")) { guest_caps_given = 1; guest_eff = unumber(val, 16, "-E"); }
        else if (!strcmp(opt, "-r")) {
            char *f[5];
            if (nrl == MAX_RLIMITS || fields(val, f, 5) != 5) usage("-r");
            rl[nrl].index = (int)number(f[0], 10, "-r");
            snprintf(rl[nrl].name, sizeof rl[nrl].name, "%s", f[1]);
            rl[nrl].resource = (int)number(f[2], 10, "-r");
            rl[nrl].soft = strcmp(f[3], "inf") ? unumber(f[3], 10, "-r") : RLIM_INFINITY;
            rl[nrl].hard = strcmp(f[4], "inf") ? unumber(f[4], 10, "-r") : RLIM_INFINITY;
            nrl++;
        }
        else if (!strcmp(opt, "-s")) oom = number(val, 10, "-s");
        else if (!strcmp(opt, "-b")) { bounding_given = 1; bounding = unumber(val, 16, "-b"); }
        else if (!strcmp(opt, "-S")) {
            char *f[3];
            if (fields(val, f, 3) != 3) usage("-S");
            sets_given = 1;
            set_e = unumber(f[0], 16, "-S"); set_p = unumber(f[1], 16, "-S"); set_i = unumber(f[2], 16, "-S");
        }
        else if (!strcmp(opt, "-A")) {
            ambient_given = 1;
            if (*val) {
                if (nambient == MAX_AMBIENT) usage("-A");
                ambient[nambient++] = (int)number(val, 10, "-A");
            }
        }
        else if (!strcmp(opt, "-m")) umask_value = number(val, 8, "-m");
        else if (!strcmp(opt, "-n")) nnp = (int)number(val, 10, "-n");
        else if (!strcmp(opt, "-0")) stdio_fd[0] = (int)number(val, 10, "-0");
        else if (!strcmp(opt, "-1")) stdio_fd[1] = (int)number(val, 10, "-1");
        else if (!strcmp(opt, "-2")) stdio_fd[2] = (int)number(val, 10, "-2");
        else if (!strcmp(opt, "-x")) cli_fd = (int)number(val, 10, "-x");
        else if (!strcmp(opt, "-F")) filter_fd = (int)number(val, 10, "-F");
        else if (!strcmp(opt, "-a")) hold_admin = (int)number(val, 10, "-a");
        else if (!strcmp(opt, "-k")) { if (nkeep == MAX_KEEP) usage("-k"); keep[nkeep++] = (int)number(val, 10, "-k"); }
        else if (!strcmp(opt, "-w")) where = val;
        else usage(opt);
    }
    if (control_fd < 0 || cli_fd < 0 || i >= argc || uid < 0 || gid < 0) usage("-c, -x, -u, -g and a program are required");
    char **program = argv + i;
    if (check) check_fd = atoi(check);

    /* every fd but stdio, the ones named here and the plan's (-k) is closed, as the zygote does */
    keep[nkeep++] = control_fd; keep[nkeep++] = cli_fd; keep[nkeep++] = check_fd; keep[nkeep++] = filter_fd;
    for (int k = 0; k < 3; k++) keep[nkeep++] = stdio_fd[k];
    close_others(keep, nkeep);

    /* the fds this process needs stay close-on-exec; the plan's (module, preopens) are the only
     * ones wasmtime-min inherits (the server dup2'd them here, which cleared close-on-exec) */
    int own[] = {control_fd, cli_fd, stdio_fd[0], stdio_fd[1], stdio_fd[2], filter_fd};
    for (size_t k = 0; k < sizeof own / sizeof own[0]; k++)
        if (own[k] > 2 && fcntl(own[k], F_SETFD, FD_CLOEXEC) < 0)
            fail("SetupError", "internal", "fd %d of the spawn is not open: %s", own[k], strerror(errno));

    /* 1. the task cgroup */
    for (int k = 0; k < njoin; k++) {
        int fd = open(join[k], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            int e = errno;
            fail("SetupError", "internal", "failed to join cgroup: writing to '%s': [errno %d] %s", join[k], e, strerror(e));
        }
        close(fd);
    }

    /* 2. may the container's user open the module? -o ROOTFD:DEV:INO, -P its path relative to
     * that directory, -H the host path (for messages) */
    if (check) {
        char *f[3];
        if (fields(check, f, 3) != 3 || !check_rel || !check_host) usage("-o");
        int root_fd = (int)number(f[0], 10, "-o");
        dev_t want_dev = (dev_t)unumber(f[1], 10, "-o");
        ino_t want_ino = (ino_t)unumber(f[2], 10, "-o");
        const char *rel = check_rel, *host = check_host;
        gid_t saved_groups[MAX_GROUPS];
        int nsaved = getgroups(MAX_GROUPS, saved_groups);
        gid_t egid = getegid();
        uint64_t e, p, in;
        char glist[4096];
        if (nsaved < 0) nsaved = 0;
        list_text(glist, sizeof glist, groups, ngroups);
        if (setgroups((size_t)ngroups, groups) < 0 || setresgid(-1, (gid_t)gid, -1) < 0 || setresuid(-1, (uid_t)uid, -1) < 0
                || (guest_caps_given && (capget3(&e, &p, &in) < 0 || capset3(guest_eff & p, p, in) < 0))) {
            int err = errno;
            fail("SetupError", "internal", "failed to take uid=%lld gid=%lld additionalGids=%s to open the module: [errno %d] %s",
                 uid, gid, glist, err, strerror(err));
        }
        int fd = openat(root_fd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        int err = errno;
        gid_t now[MAX_GROUPS];
        int nnow = getgroups(MAX_GROUPS, now);
        char nowtext[4096];
        list_text(nowtext, sizeof nowtext, now, nnow < 0 ? 0 : nnow);
        unsigned euid = (unsigned)geteuid(), gnow = (unsigned)getegid();
        if (setresuid(-1, 0, -1) < 0 || capget3(&e, &p, &in) < 0 || capset3(p, p, in) < 0
                || setresgid(-1, egid, -1) < 0 || setgroups((size_t)nsaved, saved_groups) < 0)
            fail("SetupError", "internal", "failed to switch back to root after opening the module: %s", strerror(errno));
        if (fd < 0 && (err == EACCES || err == EPERM))
            fail("ModulePermissionError", "permission_denied", "failed to open module '%s' as uid %u gid %u groups %s: %s",
                 host, euid, gnow, nowtext, strerror(err));
        if (fd < 0)
            fail("InvalidModuleError", "invalid_argument", "failed to open module '%s': %s", host, strerror(err));
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_dev != want_dev || st.st_ino != want_ino)
            fail("InvalidModuleError", "invalid_argument", "failed to open module '%s': it was replaced while the task was created", host);
        close(fd);
        close(root_fd);
    }

    /* the filter's program, read now, loaded after start */
    struct sock_filter *program_bpf = NULL;
    unsigned short program_len = 0;
    if (filter_fd >= 0) {
        struct stat st;
        if (fstat(filter_fd, &st) < 0 || st.st_size <= 0 || st.st_size % (off_t)sizeof(struct sock_filter)
                || st.st_size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS)
            fail("SetupError", "internal", "the seccomp program handed over is not a BPF program (%lld bytes)",
                 (long long)st.st_size);
        program_bpf = malloc((size_t)st.st_size);
        if (!program_bpf || pread(filter_fd, program_bpf, (size_t)st.st_size, 0) != st.st_size)
            fail("SetupError", "internal", "failed to read the seccomp program: %s", strerror(errno));
        program_len = (unsigned short)(st.st_size / (off_t)sizeof(struct sock_filter));
        close(filter_fd);
    }
    uint64_t admin = hold_admin ? 1ULL << CAP_SYS_ADMIN : 0;

    /* 3. drop to the guest's credentials */
    for (int k = 0; k < nrl; k++) {
        struct rlimit r = {(rlim_t)rl[k].soft, (rlim_t)rl[k].hard};
        if (setrlimit(rl[k].resource, &r) < 0) {
            int e = errno;
            fail("SetupError", "internal", "failed to apply process.rlimits[%d] %s soft=%llu hard=%llu: [Errno %d] %s",
                 rl[k].index, rl[k].name, rl[k].soft, rl[k].hard, e, strerror(e));
        }
    }
    if (oom != LLONG_MIN) {
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%lld", oom);
        if (fd < 0 || write(fd, buf, (size_t)n) != n) {
            int e = errno;
            fail("SetupError", "internal", "failed to write process.oomScoreAdj = %lld: [errno %d] %s", oom, e, strerror(e));
        }
        close(fd);
    }
    if (bounding_given) {
        int last = last_cap();
        for (int c = 0; c <= last; c++)
            if (!(bounding & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) {
                int e = errno;
                fail("SetupError", "internal", "failed to drop capability %d from the bounding set: [errno %d] %s", c, e, strerror(e));
            }
    }
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        fail("SetupError", "internal", "failed to set KEEPCAPS: %s", strerror(errno));
    if (setgroups((size_t)ngroups, groups) < 0 || setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) < 0
            || setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) < 0) {
        int e = errno;
        char glist[4096];
        list_text(glist, sizeof glist, groups, ngroups);
        fail("SetupError", "internal", "failed to switch to uid=%lld gid=%lld additionalGids=%s: [errno %d] %s",
             uid, gid, glist, e, strerror(e));
    }
    umask((mode_t)umask_value);
    if (sets_given && capset3(set_e | admin, set_p | admin, set_i) < 0) {
        int e = errno;
        fail("SetupError", "internal", "failed to set capabilities (effective=%#llx permitted=%#llx inheritable=%#llx): [errno %d] %s",
             (unsigned long long)set_e, (unsigned long long)set_p, (unsigned long long)set_i, e, strerror(e));
    }
    if (ambient_given) {
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
            fail("SetupError", "internal", "failed to clear the ambient set: %s", strerror(errno));
        for (int k = 0; k < nambient; k++)  /* EPERM: not in permitted and inheritable, as runc ignores */
            if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, ambient[k], 0, 0) < 0 && errno != EPERM) {
                int e = errno;
                fail("SetupError", "internal", "failed to raise ambient capability %d: [errno %d] %s", ambient[k], e, strerror(e));
            }
    }
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        fail("SetupError", "internal", "failed to clear KEEPCAPS: %s", strerror(errno));
    if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        int e = errno;
        fail("SetupError", "internal", "failed to set no_new_privs: [errno %d] %s", e, strerror(e));
    }

    /* 4. ready, then wait for start */
    char ready[64];
    int n = snprintf(ready, sizeof ready, "{\"type\": \"ready\", \"pid\": %d}", (int)getpid());
    if (send(control_fd, ready, (size_t)n, MSG_NOSIGNAL) != n) _exit(1);
    char msg[256];
    ssize_t got;
    do got = recv(control_fd, msg, sizeof msg - 1, 0); while (got < 0 && errno == EINTR);
    if (got <= 0) _exit(1);
    msg[got] = 0;
    if (strcmp(msg, "{\"type\": \"start\"}") != 0) _exit(1);
    close(control_fd);

    /* 5. stdio, then the CLI */
    for (int k = 0; k < 3; k++) {
        if (stdio_fd[k] < 0) continue;
        if (stdio_fd[k] != k) {
            if (dup2(stdio_fd[k], k) < 0) _exit(127);
            close(stdio_fd[k]);
        }
        int flags = fcntl(k, F_GETFL);
        if (flags >= 0 && (flags & O_NONBLOCK)) fcntl(k, F_SETFL, flags & ~O_NONBLOCK);
    }
    if (program_bpf) {  /* nothing of the guest's has run: say why on the task's stderr */
        struct sock_fprog prog = {program_len, program_bpf};
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) {
            int e = errno;
            dprintf(2, "runwasm: failed to confine the wasm task: failed to load the seccomp filter: [errno %d] %s\n",
                    e, strerror(e));
            _exit(127);
        }
        if (sets_given && admin && capset3(set_e, set_p, set_i) < 0) {
            int e = errno;
            dprintf(2, "runwasm: failed to confine the wasm task: failed to set capabilities (effective=%#llx "
                    "permitted=%#llx inheritable=%#llx): [errno %d] %s\n", (unsigned long long)set_e,
                    (unsigned long long)set_p, (unsigned long long)set_i, e, strerror(e));
            _exit(127);
        }
    }
    syscall(SYS_execveat, cli_fd, "", program, environ, AT_EMPTY_PATH);
    int e = errno;
    dprintf(2, "runwasm: failed to exec wasmtime %s for '%s': [Errno %d] %s\n", program[0], where, e, strerror(e));
    _exit(127);
}
