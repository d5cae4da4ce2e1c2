/* The native front of containerd-shim-runwasm-v1 (built by scripts/gen_launcher.py, `make launcher`).

   containerd execs the shim binary twice per container (`start`, `delete`). Both are offered
   to the installation's warm template (shim/template/), which runs them in a fork of an
   interpreter that imported everything already; a Python launcher paid an interpreter start
   (~20 ms on the 2-core VM this was measured on) plus its imports before it could even ask.
   This program asks without an interpreter: it speaks shim/template/client.py's protocol
   (one SOCK_SEQPACKET packet each way, fds 0-2 attached) and exits with the code the template's
   child reports. In every other case (another action, no template, a refusal, a child that died,
   an OTLP exporter configured, the template switched off, any error) it execs the Python
   launcher (PY_LAUNCHER) with the same arguments, which decides everything as before: the
   policy lives in Python, this only takes the common path faster. Two more shortcuts: a `delete`
   of a container whose server already released everything is answered here (released_delete),
   and a `start` that finds no template socket spawns the template before that exec
   (launch_template), so the first container after boot waits ~20 ms less for it.

   Compile-time constants (-D): PY_LAUNCHER (path of the Python launcher script), INSTALL_KEY
   (shim/template/key.install_key() of this installation, computed by gen_launcher.py),
   TEMPLATE_DIR (key.DEFAULT_DIR). A launcher built for another key finds no socket and takes
   the Python path, so a stale build is slow, never wrong. */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PY_LAUNCHER
#error "PY_LAUNCHER must be defined"
#endif
#ifndef INSTALL_KEY
#error "INSTALL_KEY must be defined"
#endif
#ifndef TEMPLATE_DIR
#define TEMPLATE_DIR "/run/runwasm"
#endif

#define MAGIC "RWT1"
#define TEMPLATE_ACTION "_runwasm_template" /* key.TEMPLATE_ACTION */
#define ENV_LAUNCHED "RUNWASM_TEMPLATE_LAUNCHED" /* client.ENV_LAUNCHED */
#define MAX_REQUEST (256 * 1024) /* client.MAX_REQUEST */

extern char **environ;

struct buf {
    char *data;
    size_t len;
};

/* append s and a NUL separator (the NUL is dropped again after the last field) */
static int put(struct buf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > MAX_REQUEST)
        return -1;
    memcpy(b->data + b->len, s, n);
    b->data[b->len + n] = '\0';
    b->len += n + 1;
    return 0;
}

/* key.namespaces(): "kind=dev:ino" per namespace kind present, comma-joined */
static void namespaces(char *out, size_t size) {
    static const char *kinds[] = {"mnt", "net", "ipc", "uts", "pid", "cgroup", "user"};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char path[64];
        struct stat st;
        snprintf(path, sizeof path, "/proc/self/ns/%s", kinds[i]);
        if (stat(path, &st) != 0)
            continue;
        int n = snprintf(out + used, size - used, "%s%s=%ju:%ju", used ? "," : "", kinds[i],
                         (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
        if (n < 0 || (size_t)n >= size - used) {
            out[used] = '\0';
            return;
        }
        used += (size_t)n;
    }
}

static int exporter_configured(void) { /* client._OTEL_ENDPOINTS */
    static const char *vars[] = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                 "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return 1;
    }
    return 0;
}

/* client.forward(): the template child's exit code, or -1 to take the Python path */
/* No template listens and this is a `start`: spawn one now (client.launch_pid's job, done here so
   that its imports start ~20 ms sooner, before the Python launcher's interpreter), in its own
   session with /dev/null stdio and client.template_env's variables, and tell the Python launcher
   its pid (ENV_LAUNCHED) so that it waits for that one instead of spawning another. */
static void launch_template(void) {
    static char *envp[256];
    size_t n = 0;
    for (char **e = environ; *e && n < 254; e++)
        if (!strncmp(*e, "PATH=", 5) || !strncmp(*e, "LANG=", 5) || !strncmp(*e, "LC_ALL=", 7) ||
            !strncmp(*e, "TZ=", 3) || (!strncmp(*e, "RUNWASM_", 8) && strncmp(*e, ENV_LAUNCHED "=", sizeof ENV_LAUNCHED)))
            envp[n++] = *e;
    envp[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return;
    if (posix_spawnattr_init(&attr) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return;
    }
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    char *args[] = {PY_LAUNCHER, TEMPLATE_ACTION, NULL};
    pid_t pid;
    if (posix_spawn(&pid, PY_LAUNCHER, &fa, &attr, args, envp) == 0) {
        char num[32];
        snprintf(num, sizeof num, "%d", (int)pid);
        setenv(ENV_LAUNCHED, num, 1);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
}

static int forward(int argc, char **argv) {
    const char *action = argv[argc - 1];
    if (strcmp(action, "start") != 0 && strcmp(action, "delete") != 0)
        return -1;
    const char *sw = getenv("RUNWASM_TEMPLATE");
    if ((sw && strcmp(sw, "off") == 0) || exporter_configured())
        return -1;
    const char *dir = getenv("RUNWASM_TEMPLATE_DIR");
    if (!dir || !*dir)
        dir = TEMPLATE_DIR;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/template-%s.sock", dir, INSTALL_KEY);
    if (n < 0 || (size_t)n >= sizeof addr.sun_path)
        return -1;

    static char data[MAX_REQUEST];
    struct buf b = {data, 0};
    char ns[512], cwd[4096], num[32];
    namespaces(ns, sizeof ns);
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    mode_t mask = umask(0);
    umask(mask);
    memcpy(b.data, MAGIC, 4);
    b.data[4] = '\0';
    b.len = 5;
    if (put(&b, INSTALL_KEY) || put(&b, ns) || put(&b, cwd))
        return -1;
    snprintf(num, sizeof num, "%o", (unsigned)mask);
    if (put(&b, num))
        return -1;
    snprintf(num, sizeof num, "%d", argc);
    if (put(&b, num))
        return -1;
    for (int i = 0; i < argc; i++)
        if (put(&b, argv[i]))
            return -1;
    for (char **e = environ; *e; e++)
        if (put(&b, *e))
            return -1;
    b.len--; /* no separator after the last field */

    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int err = errno;
        close(s);
        if (err == ENOENT && strcmp(action, "start") == 0)
            launch_template(); /* the Python launcher waits for it (client.run) */
        return -1;
    }
    int fds[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = b.data, .iov_len = b.len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t sent;
    do
        sent = sendmsg(s, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    if (sent != (ssize_t)b.len) {
        close(s);
        return -1;
    }
    char reply[257];
    ssize_t got;
    do
        got = recv(s, reply, sizeof reply - 1, 0);
    while (got < 0 && errno == EINTR);
    close(s);
    if (got <= 5 || memcmp(reply, "exit ", 5) != 0)
        return -1; /* refused, or the template's child died before answering */
    reply[got] = '\0';
    char *end;
    long code = strtol(reply + 5, &end, 10);
    if (*end != '\0' || end == reply + 5 || code < 0 || code > 255)
        return -1;
    return (int)code;
}

/* the -bundle flag's value (Go flag forms: -bundle X, --bundle X, -bundle=X), or NULL */
static const char *bundle_flag(int argc, char **argv) {
    for (int i = 1; i < argc - 1; i++) {
        const char *a = argv[i];
        if (a[0] != '-')
            break;
        a += a[1] == '-' ? 2 : 1;
        if (strcmp(a, "bundle") == 0 && i + 1 < argc - 1)
            return argv[i + 1];
        if (strncmp(a, "bundle=", 7) == 0)
            return a + 7;
    }
    return NULL;
}

static size_t varint(unsigned char *out, uint64_t v) {
    size_t n = 0;
    do {
        out[n] = v & 0x7f;
        v >>= 7;
        if (v)
            out[n] |= 0x80;
        n++;
    } while (v);
    return n;
}

/* whether a socket of this network namespace is bound to `path` (/proc/net/unix: the eighth
   field to the end of the line, as shim/entry/delete.py reads it). Never connect to find out:
   a server shutting down must not see a connection (asyncio's accept callback fails on it). */
static int bound(const char *path) {
    FILE *f = fopen("/proc/net/unix", "re");
    if (!f)
        return 0;
    char line[1024];
    int found = 0;
    if (!fgets(line, sizeof line, f)) { /* header */
        fclose(f);
        return 0;
    }
    while (!found && fgets(line, sizeof line, f)) {
        char *p = line;
        for (int field = 0; field < 7 && *p; field++) {
            while (*p && *p != ' ')
                p++;
            while (*p == ' ')
                p++;
        }
        size_t n = strlen(p);
        while (n && (p[n - 1] == '\n' || p[n - 1] == ' '))
            p[--n] = '\0';
        found = n && strcmp(p, path) == 0;
    }
    fclose(f);
    return found;
}

/* `delete` of a container the server released itself (its teardown finished without an error:
   shim/common/statefile.py, RELEASED_FILE): nothing is left to clean, so answer here with the
   DeleteResponse the cleanup would print (fields 1-2 from the file, exited_at = now). Only when
   the group's socket is gone or still bound (a live server, or a `start` about to listen): a
   socket file nobody holds is a dead server's, which the Python action removes
   (shim/entry/delete.py). 0: answered; -1: no. */
static int released_delete(int argc, char **argv) {
    if (strcmp(argv[argc - 1], "delete") != 0)
        return -1;
    const char *flag = bundle_flag(argc, argv);
    char bundle[4096], path[4200];
    if (flag && *flag)
        snprintf(bundle, sizeof bundle, "%s", flag);
    else if (!getcwd(bundle, sizeof bundle))
        return -1;
    unsigned char out[128];
    snprintf(path, sizeof path, "%s/runwasm-released", bundle);
    FILE *f = fopen(path, "rbe");
    if (!f)
        return -1;
    size_t n = fread(out, 1, 64, f);
    int complete = feof(f);
    fclose(f);
    if (!complete || n >= 64)
        return -1;
    char address[256] = "";
    snprintf(path, sizeof path, "%s/address", bundle);
    f = fopen(path, "re");
    if (f) {
        size_t got = fread(address, 1, sizeof address - 1, f);
        while (got && (address[got - 1] == '\n' || address[got - 1] == ' ' || address[got - 1] == '\t' ||
                       address[got - 1] == '\r'))
            got--; /* shim/entry/delete.py strips it too */
        address[got] = '\0';
        fclose(f);
    }
    if (strncmp(address, "unix://", 7) == 0) {
        struct stat st;
        if (lstat(address + 7, &st) == 0) {
            if (!bound(address + 7))
                return -1; /* nobody holds it: a dead server's, the Python action removes it */
        } else if (errno != ENOENT) {
            return -1;
        }
    } else if (address[0]) {
        return -1;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned char ts[24];
    size_t tl = 0;
    if (now.tv_sec) {
        ts[tl++] = 1 << 3;
        tl += varint(ts + tl, (uint64_t)now.tv_sec);
    }
    if (now.tv_nsec) {
        ts[tl++] = 2 << 3;
        tl += varint(ts + tl, (uint64_t)now.tv_nsec);
    }
    out[n++] = 3 << 3 | 2; /* field 3, length-delimited: google.protobuf.Timestamp */
    out[n++] = (unsigned char)tl;
    memcpy(out + n, ts, tl);
    n += tl;
    for (size_t done = 0; done < n;) {
        ssize_t w = write(1, out + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return done ? 1 : -1; /* nothing written: the Python action may still answer */
        done += (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        int code = released_delete(argc, argv);
        if (code >= 0)
            return code;
        code = forward(argc, argv);
        if (code >= 0)
            return code;
    }
    argv[0] = PY_LAUNCHER;
    execv(PY_LAUNCHER, argv);
    fprintf(stderr, "runwasm: cannot run the shim launcher %s: %s\n", PY_LAUNCHER, strerror(errno));
    return 127;
}
