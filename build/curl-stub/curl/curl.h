/* An empty stand-in for libcurl's header.
 *
 * librdkafka 2.12.1 (built by rdkafka-sys with CMake for the streamer role)
 * includes <curl/curl.h> whenever WITH_OAUTHBEARER_OIDC is *defined*, and its
 * CMake config always defines it (as 0 without curl and OpenSSL). Nothing
 * from curl is used when it is 0, so this empty header lets the build run on
 * machines (and cross targets) without libcurl's headers.
 * .cargo/config.toml puts this directory on CPATH. */
