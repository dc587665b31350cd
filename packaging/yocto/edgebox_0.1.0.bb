SUMMARY = "One static binary that turns a Linux device into a managed edge appliance"
DESCRIPTION = "Installs a prebuilt static edgebox binary (from `make dist`), \
role links, the default config and the systemd units."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Put the binary for the machine's CPU next to this recipe, named
# edgebox-${TARGET_ARCH} (e.g. edgebox-aarch64), along with the files from
# packaging/ (edgebox.toml, systemd units).
SRC_URI = "file://edgebox-${TARGET_ARCH} \
           file://edgebox.toml \
           file://edgebox.service \
           file://edgebox@.service"

COMPATIBLE_HOST = "(x86_64|aarch64|riscv64).*-linux"
EDGEBOX_ROLES ?= "tsdb agent"

inherit systemd
SYSTEMD_SERVICE:${PN} = "edgebox.service"

# A static binary: nothing to strip or to scan for shared-library deps.
INSANE_SKIP:${PN} += "already-stripped ldflags"
INHIBIT_PACKAGE_STRIP = "1"

do_install() {
    install -D -m 0755 ${WORKDIR}/edgebox-${TARGET_ARCH} ${D}${bindir}/edgebox
    for role in ${EDGEBOX_ROLES}; do
        ln -sf edgebox ${D}${bindir}/${role}
    done
    install -D -m 0644 ${WORKDIR}/edgebox.toml ${D}${sysconfdir}/edgebox/edgebox.toml
    install -D -m 0644 ${WORKDIR}/edgebox.service ${D}${systemd_system_unitdir}/edgebox.service
    install -D -m 0644 ${WORKDIR}/edgebox@.service ${D}${systemd_system_unitdir}/edgebox@.service
}

CONFFILES:${PN} = "${sysconfdir}/edgebox/edgebox.toml"
