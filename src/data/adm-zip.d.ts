// Minimal types for adm-zip (the package ships none; @types/adm-zip would replace this file).
declare module 'adm-zip' {
  class AdmZip {
    constructor(fileOrBuffer?: string | Buffer);
    addFile(entryName: string, content: Buffer): void;
    extractAllTo(targetPath: string, overwrite?: boolean): void;
    toBuffer(): Buffer;
    writeZip(targetFileName?: string): void;
  }
  export default AdmZip;
}
