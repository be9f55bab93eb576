/** Every kind of file criu-ts knows; importing this registers them all with the files registry. */
import "./regfile.ts";
import "./tty.ts";
import "./pipe.ts";
import "./eventfd.ts";
import "./eventpoll.ts";
import "./inet_socket.ts";
