/* Confinement probe for mybuild's sandbox tests: a static program run inside RUN.
 * Prints one "PROBE key=value" line per check; the tests compare the values. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

static const char *err_name(int e) {
    switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case ENXIO: return "ENXIO";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ESTALE: return "ESTALE";
    default: return strerror(e);
    }
}

static void status(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    if (!f) { printf("PROBE status=%s\n", err_name(errno)); return; }
    while (fgets(line, sizeof line, f)) {
        const char *keys[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
                              "Seccomp:", "NoNewPrivs:"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
            size_t n = strlen(keys[i]);
            if (strncmp(line, keys[i], n) == 0) {
                char *v = line + n;
                while (*v == ' ' || *v == '\t') v++;
                v[strcspn(v, "\n")] = 0;
                printf("PROBE %.*s=%s\n", (int)(n - 1), keys[i], v);
            }
        }
    }
    fclose(f);
}

static void report(const char *key, long rc) {
    printf("PROBE %s=%s\n", key, rc < 0 ? err_name(errno) : "ok");
}

static void syscalls(void) {
    report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    struct { unsigned int bytes; int type; unsigned char h[8]; } handle = {8, 1, {0}};
    errno = 0;
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, &handle, O_RDONLY));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_net", unshare(CLONE_NEWNET));
    /* Each with arguments the kernel would refuse anyway: only the filter's EPERM
     * counts as denied. */
    report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -3));
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    report("raw_socket", fd);
    if (fd >= 0) close(fd);
    fd = open("/proc/sys/kernel/core_pattern", O_WRONLY);
    report("write_core_pattern", fd);
    if (fd >= 0) close(fd);
    fd = open("/sys/class/net/lo/mtu", O_WRONLY);
    report("write_sys", fd);
    if (fd >= 0) close(fd);
    int n = 0;
    DIR *d = opendir("/sys/fs/cgroup");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
        closedir(d);
    }
    printf("PROBE cgroup_entries=%d\n", n);
    FILE *k = fopen("/proc/keys", "r");
    char buf[64];
    printf("PROBE proc_keys_bytes=%zu\n", k ? fread(buf, 1, sizeof buf, k) : (size_t)0);
    if (k) fclose(k);
}

static void fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) { printf("PROBE fds=%s\n", err_name(errno)); return; }
    int self = dirfd(d);
    char out[512] = "";
    struct dirent *e;
    int nums[256], n = 0;
    while ((e = readdir(d)) && n < 256) {
        if (e->d_name[0] == '.') continue;
        int v = atoi(e->d_name);
        if (v != self) nums[n++] = v;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (nums[j] < nums[i]) { int t = nums[i]; nums[i] = nums[j]; nums[j] = t; }
    for (int i = 0; i < n; i++) {
        char one[16];
        snprintf(one, sizeof one, i ? ",%d" : "%d", nums[i]);
        strncat(out, one, sizeof out - strlen(out) - 1);
    }
    printf("PROBE fds=%s\n", out);
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "open") == 0) {
        for (int i = 2; i < argc; i++) {
            int fd = open(argv[i], O_RDONLY);
            printf("PROBE open %s=%s\n", argv[i], fd < 0 ? err_name(errno) : "ok");
            if (fd >= 0) close(fd);
        }
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "setcap") == 0) {
        /* File capabilities (VFS_CAP_REVISION_2) granting CAP_SYS_ADMIN (21) in
         * the permitted set: exec must cap them at the bounding set. (With the
         * effective bit as well, exec itself fails with EPERM.) */
        unsigned int cap[5] = {0x02000000, 1u << 21, 0, 0, 0};
        report("setcap", setxattr(argv[2], "security.capability", cap, sizeof cap, 0));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "ptrace") == 0) {
        /* Seize only: the tracee keeps running and is let go when the probe exits. */
        report("ptrace", ptrace(PTRACE_SEIZE, atoi(argv[2]), 0, 0));
        return 0;
    }
    status();
    syscalls();
    fds();
    fflush(stdout);
    return 0;
}
