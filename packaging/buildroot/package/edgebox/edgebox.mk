################################################################################
#
# edgebox: installs a prebuilt static binary, its role links, config and
# init script.
#
################################################################################

EDGEBOX_VERSION = 0.1.0
EDGEBOX_SITE = $(BR2_EXTERNAL_EDGEBOX_PATH)/package/edgebox
EDGEBOX_SITE_METHOD = local
EDGEBOX_LICENSE = Apache-2.0

define EDGEBOX_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(call qstrip,$(BR2_PACKAGE_EDGEBOX_BINARY)) $(TARGET_DIR)/usr/bin/edgebox
	for role in $(call qstrip,$(BR2_PACKAGE_EDGEBOX_ROLES)); do \
		ln -sf edgebox $(TARGET_DIR)/usr/bin/$$role; \
	done
	$(INSTALL) -D -m 0644 $(EDGEBOX_PKGDIR)/edgebox.toml $(TARGET_DIR)/etc/edgebox/edgebox.toml
endef

define EDGEBOX_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(EDGEBOX_PKGDIR)/S90edgebox $(TARGET_DIR)/etc/init.d/S90edgebox
endef

define EDGEBOX_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(EDGEBOX_PKGDIR)/edgebox.service $(TARGET_DIR)/usr/lib/systemd/system/edgebox.service
endef

$(eval $(generic-package))
