// URLs as they are printed: a password in one never reaches a terminal or a log.

/** The URL with its password (user:password@) replaced by ***. */
export function withoutPassword(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}
